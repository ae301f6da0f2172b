"""The tool loop of a conversation: an answer's calls are run, their results stored, and the model
answers again, until it answers without calling (or the turn's rounds are spent).

    waiting = needs_approval(toolbox, calls)            # calls of tools that are not read-only
    msg = await run_call(toolbox, db, ctx, parent_id, call, allowed=conv_tools)   # a `tool` message

The loop itself (serving one HTTP stream) is in server/api/conversations.py; this module is the
work between: deciding which calls wait for the user, running a call under the toolbox's limits
(timeout, output size, errors returned to the model), and storing each result as a `tool` message
in the conversation's tree. A call of a tool the conversation does not offer, or that the user
declined, is answered with an error result, so the model learns why and the chain stays whole.
"""

import asyncio

from chatloop.models.tool_calls import parse_json
from chatloop.store.conversations import add_tool_result
from chatloop.store.db import Database
from chatloop.store.models import Message
from chatloop.tools.base import CallContext, Toolbox, ToolResult

DECLINED = "The user declined to run this tool call. Do not retry it; answer without it."


def needs_approval(toolbox: Toolbox, calls: list[dict]) -> list[dict]:
    """The calls that may not run before the user allows them: tools not marked read-only."""
    waiting = []
    for call in calls:
        spec = toolbox.spec(call["function"]["name"])
        if spec is not None and not spec.read_only:
            waiting.append(call)
    return waiting


def call_out(toolbox: Toolbox, call: dict) -> dict:
    """A call as the app shows it before it runs."""
    spec = toolbox.spec(call["function"]["name"])
    try:
        arguments = parse_json(call["function"].get("arguments") or "{}")
    except ValueError:
        arguments = call["function"].get("arguments")
    return {"id": call.get("id"), "name": call["function"]["name"], "arguments": arguments,
            "read_only": bool(spec and spec.read_only)}


async def run_call(toolbox: Toolbox, db: Database, context: CallContext, parent_id: str, call: dict, *,
                   allowed: set[str], declined: bool = False) -> Message:
    """Run one call (or record that it was declined / not offered) and store its result."""
    name = call["function"]["name"]
    arguments = call["function"].get("arguments") or "{}"
    if declined:
        result = ToolResult(name, _args(arguments), DECLINED, is_error=True)
    elif name not in allowed:
        result = ToolResult(name, _args(arguments), f"error: the tool {name!r} is not enabled in this conversation",
                            is_error=True)
    else:
        result = await toolbox.call(name, arguments, context)
    meta = {**result.as_dict(), "declined": declined}
    content = meta.pop("content")

    def write() -> Message:
        with db.session() as s:
            return add_tool_result(s, context.conversation_id, parent_id, call.get("id") or "", content, meta)

    return await asyncio.to_thread(write)


def _args(arguments: str) -> dict:
    try:
        value = parse_json(arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
