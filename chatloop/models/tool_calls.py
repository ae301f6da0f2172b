"""The tool-call protocol, in one place: how tools are shown to a model, how a call is written in
its output, and how calls are read back out of an answer.

Our format (for templates without native tool support) is the Hermes/Qwen convention: the tools'
JSON signatures go into the system prompt, and the model answers a call as
`<tool_call>{"name": NAME, "arguments": {...}}</tool_call>`. Past assistant calls in a conversation
are rendered the same way, so a model sees its own earlier calls as it would have written them.

Three ways a request may use tools (OpenAI's `tool_choice`):
- `none`: tools are neither described nor parsed;
- `auto`: tools are described; a well-formed call of a known function in the answer becomes a call;
- forced (`required`, or one named function): the answer is decoded under `forced_call_schema`,
  so it is exactly one JSON call object.
"""

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from chatloop.errors import UsageError

TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)
TOOLS_PROMPT = (
    "You can call functions. Their JSON signatures:\n{signatures}\n"
    "To call one, answer with only <tool_call>{{\"name\": NAME, \"arguments\": {{...}}}}</tool_call>. "
    "Function results come back in a 'tool' message."
)


@dataclass(frozen=True)
class ToolCall:
    """A call the model made: `arguments` is JSON text, as in OpenAI's API."""

    name: str
    arguments: str
    id: str = ""

    @classmethod
    def new(cls, name: str, arguments: dict) -> "ToolCall":
        return cls(name=name, arguments=json.dumps(arguments, ensure_ascii=False), id="call_" + secrets.token_hex(8))

    def as_openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def loads(text: str, what: str) -> Any:
    """json.loads that turns every failure (including absurd nesting) into a UsageError."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise UsageError(f"{what} are not JSON: {reason}") from e


def describe_tools(messages: list[dict], tools: list[dict]) -> list[dict]:
    """Describe `tools` (OpenAI function definitions) in the system prompt, kept first."""
    signatures = "\n".join(json.dumps(t.get("function", t), ensure_ascii=False) for t in tools)
    note = TOOLS_PROMPT.format(signatures=signatures)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"] + "\n\n" + note}] + messages[1:]
    return [{"role": "system", "content": note}] + messages


def render_calls(calls: list, where: str) -> str:
    """An assistant message's OpenAI `tool_calls` as the model writes them (appended to its text)."""
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise UsageError(f"{where}.tool_calls: each call needs function.name")
        args = fn.get("arguments") or "{}"
        if isinstance(args, str):
            args = loads(args, f"{where}.tool_calls: arguments of {fn['name']}")
        payload = {"name": fn["name"], "arguments": args}
        try:
            out.append(f"<tool_call>{json.dumps(payload, ensure_ascii=False)}</tool_call>")
        except (RecursionError, TypeError, ValueError) as e:
            raise UsageError(f"{where}.tool_calls: arguments of {fn['name']} cannot be encoded: {e}") from e
    return "".join(out)


def parse_calls(text: str, names: set[str]) -> tuple[str, list[ToolCall]]:
    """Split an answer (tool_choice auto) into (remaining text, calls of known functions).
    Anything that is not a well-formed call of a known function stays text."""
    calls = []
    for match in TOOL_CALL_RE.finditer(text):
        try:
            payload = json.loads(match.group(1))
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(payload, dict) and payload.get("name") in names and isinstance(payload.get("arguments", {}), dict):
            calls.append(ToolCall.new(payload["name"], payload.get("arguments", {})))
    if calls:
        text = TOOL_CALL_RE.sub("", text).strip()
    return text, calls


def forced_call_schema(tools: list[dict]) -> dict:
    """The JSON schema a forced answer is decoded under: one call object of one of `tools`."""
    schemas = [{"type": "object", "properties": {
        "name": {"const": t["function"]["name"]},
        "arguments": t["function"].get("parameters") or {"type": "object"}},
        "required": ["name", "arguments"], "additionalProperties": False} for t in tools]
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def parse_forced(text: str) -> list[ToolCall]:
    """The call in a forced answer; [] if generation stopped before the JSON was complete."""
    try:
        payload = json.loads(text)
        return [ToolCall.new(payload["name"], payload["arguments"])]
    except (json.JSONDecodeError, RecursionError, KeyError, TypeError):
        return []
