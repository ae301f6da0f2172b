"""The chat format, defined once: a conversation (OpenAI `messages`) -> token ids (+ assistant mask).

- `render_prompt` (serving): the prompt a model answers, rendered once with the tokenizer's own
  chat template and tokenized once, so its cost is linear in the conversation.
- `render_conversation` (training, evaluation): the same text plus a mask marking the tokens of
  each assistant message, end-of-turn marker included, so a model learns to stop.

With no system message the template's default applies. With a token budget, the oldest turns are
dropped (the system prompt is kept; a conversation never starts with an assistant reply) and the
number dropped is reported; the cut is found by bisection, so a long conversation costs a
logarithmic number of renders, not one per dropped turn. Tools and tool calls are written as
`tool_calls.py` (the tool-call protocol) says: a template that knows tools gets them (`tools=`),
past calls (`tool_calls`, arguments as objects) and tool results to render itself; any other
template gets our tool description in the system prompt and calls written into the content.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatloop.errors import ContextTooLongError, UsageError
from chatloop.models.tool_calls import describe_tools, render_calls, structured_calls, tool_format

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class RenderedPrompt:
    ids: list[int]
    text: str
    dropped: int  # how many of the oldest messages were dropped to fit the budget


@dataclass
class RenderedConversation(RenderedPrompt):
    mask: list[int]  # 1 where the token belongs to an assistant message (trained on), else 0


def special_texts(tokenizer) -> tuple[str, ...]:
    """The texts the tokenizer turns into special tokens (`<|im_start|>`, `<|eot_id|>` ...), longest first."""
    texts = set(getattr(tokenizer, "all_special_tokens", None) or [])
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            texts.add(str(token))
    return tuple(sorted((t for t in texts if len(t) > 1), key=len, reverse=True))


def defuse(text: str, specials: tuple[str, ...]) -> str:
    """`text` with every special-token text broken by a zero-width space after its first character:
    a message (a user's, a tool result's) can write `<|im_start|>system` but it stays text, so it
    can never close its own turn or open a system turn."""
    for special in specials:
        if special in text:
            text = text.replace(special, special[0] + "\u200b" + special[1:])
    return text


def normalize_messages(messages: Any, keep_calls: bool = False, specials: tuple[str, ...] = ()) -> list[dict]:
    """Validate OpenAI-style messages; content may be a string or a list of text parts. An
    assistant's `tool_calls` are written into its content in our format, or, with `keep_calls`
    (for templates that render calls), kept as checked calls with object arguments. `specials`
    (the tokenizer's special-token texts) are defused in every message's text."""
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
        content = defuse(content, specials)
        calls = m.get("tool_calls") or []
        # templates that render tool results may name the call they answer (Mistral requires it)
        ids = {k: m[k] for k in ("tool_call_id", "name") if keep_calls and isinstance(m.get(k), str)}
        if calls and role == "assistant" and keep_calls:
            out.append({"role": role, "content": content, "tool_calls": structured_calls(calls, f"messages[{i}]"),
                        **ids})
            continue
        if calls and role == "assistant":
            content += render_calls(calls, f"messages[{i}]")
        out.append({"role": role, "content": content, **ids})
    return out


def _template(tokenizer, messages: list[dict], add_generation_prompt: bool, tools: list[dict] | None = None) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except Exception as e:  # jinja raises its own errors for conversations a template rejects
        raise UsageError(f"the model's chat template rejected the conversation: {e}") from e


def _prompt(tokenizer, messages: list[dict], add_generation_prompt: bool, tools: list[dict] | None) -> RenderedPrompt:
    text = _template(tokenizer, messages, add_generation_prompt, tools)
    return RenderedPrompt(ids=list(tokenizer(text, add_special_tokens=False)["input_ids"]), text=text, dropped=0)


def _masked(tokenizer, messages: list[dict], add_generation_prompt: bool,
            tools: list[dict] | None) -> RenderedConversation:
    text = _template(tokenizer, messages, add_generation_prompt, tools)
    # Character spans of assistant messages: the difference between rendering up to the turn's
    # generation prompt and rendering the turn itself (works for any template that appends).
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _template(tokenizer, messages[:i], True, tools) if i else ""
        upto = _template(tokenizer, messages[: i + 1], False, tools)
        if not (text.startswith(upto) and upto.startswith(before)):
            raise UsageError("the model's chat template is not prefix-stable; cannot mark assistant tokens")
        spans.append((len(before), len(upto)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s < end and start < e for s, e in spans)) for start, end in enc["offset_mapping"]]
    return RenderedConversation(ids=list(enc["input_ids"]), text=text, dropped=0, mask=mask)


def _fit(render: Callable[[list[dict]], RenderedPrompt], messages: list[dict], max_tokens: int | None):
    """Render `messages`, dropping the fewest oldest turns that make it fit in `max_tokens`.

    Cut points are the user messages after the first turn (so what is kept starts with a user
    message) and, last resort, the final message alone; the token count falls as more is cut, so
    the smallest fitting cut is bisected.
    """
    system = messages[:1] if messages[0]["role"] == "system" else []
    turns = messages[len(system):]
    full = render(system + turns)
    if max_tokens is None or len(full.ids) <= max_tokens:
        return full
    cuts = sorted({k for k in range(1, len(turns)) if turns[k]["role"] == "user"} | {len(turns) - 1} - {0})
    best = None
    lo, hi = 0, len(cuts) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        rendered = render(system + turns[cuts[mid]:])
        if len(rendered.ids) <= max_tokens:
            best, hi = (cuts[mid], rendered), mid - 1
        else:
            lo = mid + 1
    if best is None:
        last = render(system + turns[cuts[-1]:]) if cuts else full
        raise ContextTooLongError(
            f"the last message does not fit in the context: {len(last.ids)} tokens with the system "
            f"prompt, at most {max_tokens} allowed; shorten it or raise the limit"
        )
    cut, rendered = best
    rendered.dropped = cut
    return rendered


def _prepare(tokenizer, messages: Any, tools: list[dict] | None) -> tuple[list[dict], list[dict] | None]:
    """(messages, tools for the template): a template that knows tools renders them itself."""
    native = tool_format(tokenizer).native
    messages = normalize_messages(messages, keep_calls=native, specials=special_texts(tokenizer))
    if native or not tools:
        return messages, tools or None
    return describe_tools(messages, tools), None


def render_prompt(
    tokenizer, messages: Any, *, max_tokens: int | None = None, tools: list[dict] | None = None
) -> RenderedPrompt:
    """The prompt for the model's next answer (generation prompt appended), in at most `max_tokens`
    tokens; `tools` (OpenAI function definitions) are shown as the model's template shows them."""
    prepared, shown = _prepare(tokenizer, messages, tools)
    return _fit(lambda ms: _prompt(tokenizer, ms, True, shown), prepared, max_tokens)


def render_conversation(
    tokenizer,
    messages: Any,
    *,
    add_generation_prompt: bool = False,
    max_tokens: int | None = None,
    tools: list[dict] | None = None,
) -> RenderedConversation:
    """Render `messages` with the assistant mask; with `max_tokens`, drop the oldest turns (keeping
    system) until it fits."""
    prepared, shown = _prepare(tokenizer, messages, tools)
    return _fit(lambda ms: _masked(tokenizer, ms, add_generation_prompt, shown), prepared, max_tokens)
