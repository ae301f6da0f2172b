"""The chat format, defined once: a conversation (OpenAI `messages`) -> token ids + assistant mask.

Training (loss on assistant tokens only), serving and evaluation all call `render_conversation`.
It uses the tokenizer's own chat template, so a model is prompted exactly as it was trained; with
no system message the template's default applies. The mask marks the tokens of each assistant
message, end-of-turn marker included, so a model learns to stop. Conversations longer than the
budget drop their oldest turns (the system prompt is kept) and report how many were dropped.
"""

import json
import re
from dataclasses import dataclass
from typing import Any

from chatloop.errors import ContextTooLongError, UsageError

ROLES = ("system", "user", "assistant", "tool")

# Function calling for templates without native tool support: the tools are described in the
# system prompt and the model answers a call as a tagged JSON object (the Hermes/Qwen convention).
TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)
TOOLS_PROMPT = (
    "You can call functions. Their JSON signatures:\n{signatures}\n"
    "To call one, answer with only <tool_call>{{\"name\": NAME, \"arguments\": {{...}}}}</tool_call>. "
    "Function results come back in a 'tool' message."
)


@dataclass
class RenderedConversation:
    ids: list[int]
    mask: list[int]  # 1 where the token belongs to an assistant message (trained on), else 0
    text: str
    dropped: int  # how many of the oldest messages were dropped to fit the budget


def normalize_messages(messages: Any) -> list[dict[str, str]]:
    """Validate OpenAI-style messages; content may be a string or a list of text parts."""
    if not isinstance(messages, list) or not messages:
        raise UsageError("messages must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise UsageError(f"messages[{i}] must be an object with 'role' and 'content'")
        role = m.get("role")
        if role not in ROLES:
            raise UsageError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise UsageError(f"messages[{i}].content[{j}] must be a text part {{'type': 'text', 'text': ...}}")
                parts.append(part["text"])
            content = "".join(parts)
        if content is None and role == "assistant":
            content = ""
        if not isinstance(content, str):
            raise UsageError(f"messages[{i}].content must be a string")
        calls = m.get("tool_calls") or []
        if calls and role == "assistant":
            content += "".join(f"<tool_call>{json.dumps(_call_payload(c, i), ensure_ascii=False)}</tool_call>"
                               for c in calls)
        out.append({"role": role, "content": content})
    return out


def _call_payload(call: Any, i: int) -> dict:
    """An OpenAI tool call ({"function": {"name", "arguments": JSON string}}) as the model writes it."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise UsageError(f"messages[{i}].tool_calls: each call needs function.name")
    args = fn.get("arguments") or "{}"
    try:
        return {"name": fn["name"], "arguments": json.loads(args) if isinstance(args, str) else args}
    except json.JSONDecodeError as e:
        raise UsageError(f"messages[{i}].tool_calls: arguments of {fn['name']} are not JSON: {e}") from e


def with_tools(messages: list[dict], tools: list[dict]) -> list[dict]:
    """Describe `tools` in the system prompt (kept first, merged with an existing one)."""
    signatures = "\n".join(json.dumps(t.get("function", t), ensure_ascii=False) for t in tools)
    note = TOOLS_PROMPT.format(signatures=signatures)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"] + "\n\n" + note}] + messages[1:]
    return [{"role": "system", "content": note}] + messages


def parse_tool_calls(text: str, names: set[str]) -> tuple[str, list[dict]]:
    """Split a model answer into (remaining text, calls [{"name", "arguments": dict}]).

    Only well-formed calls of known functions count; anything else stays text."""
    calls = []
    for match in TOOL_CALL_RE.finditer(text):
        try:
            payload = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if isinstance(payload, dict) and payload.get("name") in names and isinstance(payload.get("arguments", {}), dict):
            calls.append({"name": payload["name"], "arguments": payload.get("arguments", {})})
    if calls:
        text = TOOL_CALL_RE.sub("", text).strip()
    return text, calls


def _template(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # jinja raises its own errors for conversations a template rejects
        raise UsageError(f"the model's chat template rejected the conversation: {e}") from e


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> RenderedConversation:
    text = _template(tokenizer, messages, add_generation_prompt)
    # Character spans of assistant messages: the difference between rendering up to the turn's
    # generation prompt and rendering the turn itself (works for any template that appends).
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _template(tokenizer, messages[:i], True) if i else ""
        upto = _template(tokenizer, messages[: i + 1], False)
        if not (text.startswith(upto) and upto.startswith(before)):
            raise UsageError("the model's chat template is not prefix-stable; cannot mark assistant tokens")
        spans.append((len(before), len(upto)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s < end and start < e for s, e in spans)) for start, end in enc["offset_mapping"]]
    return RenderedConversation(ids=list(enc["input_ids"]), mask=mask, text=text, dropped=0)


def render_conversation(
    tokenizer,
    messages: Any,
    *,
    add_generation_prompt: bool = False,
    max_tokens: int | None = None,
    tools: list[dict] | None = None,
) -> RenderedConversation:
    """Render `messages`; with `max_tokens`, drop the oldest turns (keeping system) until it fits.
    `tools` (OpenAI function definitions) are described in the system prompt."""
    messages = normalize_messages(messages)
    if tools:
        messages = with_tools(messages, tools)
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system) :]
    dropped = 0
    while True:
        rendered = _render(tokenizer, system + turns, add_generation_prompt)
        if max_tokens is None or len(rendered.ids) <= max_tokens:
            rendered.dropped = dropped
            return rendered
        if len(turns) <= 1:
            raise ContextTooLongError(
                f"the last message does not fit in the context: {len(rendered.ids)} tokens with the system "
                f"prompt, at most {max_tokens} allowed; shorten it or raise the limit"
            )
        # Drop the oldest turn; never leave the conversation starting with an assistant reply.
        turns = turns[1:]
        dropped += 1
        while len(turns) > 1 and turns[0]["role"] != "user":
            turns = turns[1:]
            dropped += 1
