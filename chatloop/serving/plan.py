"""The request plan: everything about one chat request, decided once, before any work is queued.

    plan = build_plan(engine, request, limits)      # in a worker thread: it renders and tokenizes

`/v1` and `/api` both turn their bodies into a protocol-neutral `ChatRequest`. The plan fixes, in
this one place: the prompt token ids (the conversation rendered once), the sampling parameters of
each choice (seed + index, stops, the grammar), how tools are used, and the budget — number of
messages, prompt tokens against the context, completion tokens (the request's, or the server's
default clipped to the room left) and generation time. A request outside the budget is refused
here with a UsageError that names the limit, so it never reaches the engine.

A remote engine (engine/remote.py) renders and tokenizes itself: its plan carries the request as
OpenAI fields (`body`: messages, tools, tool_choice, response_format) instead of token ids, and
its tool calls come back in our format. The remote enforces its own context; without a
`max_tokens` the remote's default applies; the generation-time budget is kept here as for a
local engine.
"""

from dataclasses import dataclass, field

from chatloop.config import Settings
from chatloop.engine.sampling import SamplingParams
from chatloop.errors import ContextTooLongError, UsageError
from chatloop.models.chat_format import render_prompt
from chatloop.models.tool_calls import (
    OURS,
    ToolCall,
    ToolFormat,
    ToolParser,
    forced_call_schema,
    split_answer,
    tool_format,
)
from chatloop.models.vision import Pixels, render_vision_prompt


@dataclass(frozen=True)
class Limits:
    """The request budget (settings documented in config.py)."""

    default_max_tokens: int = 1024
    max_messages: int = 2048
    max_generation_seconds: float = 300.0

    @classmethod
    def from_settings(cls, s: Settings) -> "Limits":
        return cls(s.default_max_tokens, s.max_messages, s.max_generation_seconds)


@dataclass
class ChatRequest:
    """One chat request, whichever API it came through."""

    messages: list[dict]  # OpenAI-shaped: role, content, tool_calls
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    tools: list[dict] | None = None  # OpenAI function definitions
    tool_choice: str | None = None  # none | auto | required | the name of one function; None = auto
    parallel_tool_calls: bool = True  # False: at most one call per answer (models/tool_calls.py)
    response_format: dict | None = None  # {"type": "json_object"} or {"type": "json_schema", "schema": {...}}
    truncate: bool = False  # a conversation drops its oldest turns to fit; the API refuses instead
    logprobs: int | None = None  # report each token's log probability and this many alternatives
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit


@dataclass(frozen=True)
class ToolUse:
    """How an answer's text becomes tool calls: `none`, `auto` (parse known calls, written in the
    model's `format`) or `forced`; `parallel` false: at most one call (the first)."""

    mode: str = "none"
    names: frozenset[str] = frozenset()
    definitions: tuple[dict, ...] = ()
    format: ToolFormat = OURS
    parallel: bool = True

    def parser(self) -> ToolParser | None:
        """A parser for one answer as it streams (None: no tools, the text is all content)."""
        if self.mode == "none":
            return None
        return ToolParser(self.format, self.names, forced=self.mode == "forced", single=not self.parallel)

    def schema(self) -> dict:
        """The JSON schema a forced answer is decoded under (an array of calls if parallel)."""
        return forced_call_schema(list(self.definitions), parallel=self.parallel)

    def extract(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """(content, calls) of a finished answer (the stream's parser, fed all at once)."""
        parser = self.parser()
        if parser is None:
            return text, []
        content, calls = split_answer(parser, text)
        # a forced answer cut off by max_tokens before a call was complete is not a call: it stays text
        return (content.strip() or None, calls) if calls else (text, [])


@dataclass
class RequestPlan:
    model_id: str
    prompt_ids: list[int]
    params: list[SamplingParams]  # one per choice
    max_tokens: int | None  # None: a remote engine's own default
    tools: ToolUse = field(default_factory=ToolUse)
    dropped: int = 0  # oldest messages left out to fit the context (conversations)
    pixels: Pixels | None = None  # the prompt's images, for an engine that takes them (models/vision.py)
    body: dict | None = None  # for a remote engine: the request as OpenAI fields (then prompt_ids is empty)


def _render(engine, messages: list[dict], **kw):
    """The prompt, through the processor of a vision-language model (images as pixels), else the
    tokenizer (images were already replaced by their OCR text: serving/images.py)."""
    if getattr(engine, "accepts_images", False):
        return render_vision_prompt(engine.processor, messages, **kw)
    return render_prompt(engine.tokenizer, messages, **kw)


def _tool_use(req: ChatRequest, fmt: ToolFormat) -> ToolUse:
    if not req.tools or req.tool_choice == "none":
        return ToolUse()
    names = frozenset(t["function"]["name"] for t in req.tools)
    if req.tool_choice in (None, "auto"):
        return ToolUse("auto", names, tuple(req.tools), fmt, req.parallel_tool_calls)
    if req.tool_choice == "required":
        return ToolUse("forced", names, tuple(req.tools), fmt, req.parallel_tool_calls)
    if req.tool_choice not in names:
        raise UsageError(f"tool_choice names '{req.tool_choice}', which is not in tools", param="tool_choice")
    # a named function: exactly one call of it, whatever parallel_tool_calls says
    return ToolUse("forced", frozenset([req.tool_choice]),
                   tuple(t for t in req.tools if t["function"]["name"] == req.tool_choice), fmt, parallel=False)


def _grammar(engine, req: ChatRequest, tools: ToolUse):
    fmt = (req.response_format or {}).get("type", "text")
    if tools.mode == "forced" and fmt != "text":
        raise UsageError("a forced tool call and a JSON response_format cannot be combined", param="response_format")
    try:
        if tools.mode == "forced":
            return engine.grammars.json_schema(tools.schema())
        if fmt == "json_schema":
            return engine.grammars.json_schema(req.response_format["schema"])
        if fmt == "json_object":
            return engine.grammars.json_object()
    except UsageError as e:
        raise UsageError(str(e), param="tools" if tools.mode == "forced" else "response_format",
                         code="invalid_schema") from e
    return None


def _budget(engine, req: ChatRequest, limits: Limits, tools: ToolUse):
    """(rendered prompt, completion tokens): the context budget, checked in this one place."""
    if len(req.messages) > limits.max_messages:
        raise UsageError(f"too many messages: {len(req.messages)}; this server accepts at most "
                         f"{limits.max_messages} per request", param="messages", code="too_many_messages")
    context = engine.max_len
    described = list(tools.definitions) if tools.mode != "none" else None
    if req.truncate:
        # A conversation keeps room for the answer (by default at most half the context, so a
        # small-context model still sees the conversation) and drops its oldest turns to make it.
        wanted = req.max_tokens or min(limits.default_max_tokens, context // 2)
        if wanted >= context:
            raise ContextTooLongError(f"max_tokens {wanted} leaves no room for the conversation in this "
                                      f"model's context of {context} tokens", param="max_tokens")
        rendered = _render(engine, req.messages, max_tokens=context - wanted, tools=described)
        return rendered, wanted
    rendered = _render(engine, req.messages, tools=described)
    room = context - len(rendered.ids)
    if room <= 0 or (req.max_tokens and req.max_tokens > room):
        asked = f"; {req.max_tokens} completion tokens were requested" if req.max_tokens else ""
        raise ContextTooLongError(f"this model's context is {context} tokens and the messages take "
                                  f"{len(rendered.ids)}{asked}", param="messages")
    return rendered, req.max_tokens or min(limits.default_max_tokens, room)


def _sampling(req: ChatRequest, limits: Limits, max_tokens: int | None, grammar=None,
              constrained: bool = False) -> list[SamplingParams]:
    """One choice's parameters each. Stop sequences end free text only: an answer held to a grammar
    (a JSON response_format, a forced tool call; `constrained` where a remote engine holds it) ends
    where its JSON does, which a stop sequence met inside it (a quote, a value) would cut into text
    that does not parse."""
    stop = () if grammar is not None or constrained else req.stop
    return [SamplingParams(
        max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
        frequency_penalty=req.frequency_penalty, presence_penalty=req.presence_penalty,
        seed=None if req.seed is None else (req.seed + i) % 2**63, stop=stop, grammar=grammar,
        max_time_s=limits.max_generation_seconds, logprobs=req.logprobs,
        logit_bias=tuple(sorted((req.logit_bias or {}).items())),
    ) for i in range(req.n)]


def _message_out(m: dict) -> dict:
    """A message as OpenAI fields (empty tool fields left out: some servers refuse nulls)."""
    out = {"role": m["role"], "content": m.get("content") if m.get("content") is not None else ""}
    out |= {k: m[k] for k in ("tool_calls", "tool_call_id", "name") if m.get(k)}
    return out


def _remote_plan(engine, req: ChatRequest, limits: Limits) -> RequestPlan:
    if len(req.messages) > limits.max_messages:
        raise UsageError(f"too many messages: {len(req.messages)}; this server accepts at most "
                         f"{limits.max_messages} per request", param="messages", code="too_many_messages")
    tools = _tool_use(req, OURS)
    constrained = tools.mode == "forced" or (req.response_format or {}).get("type", "text") != "text"
    body: dict = {"messages": [_message_out(m) for m in req.messages]}
    if tools.mode != "none":
        body["tools"] = list(req.tools)
        body["tool_choice"] = ({"type": "function", "function": {"name": req.tool_choice}}
                               if req.tool_choice not in (None, "auto", "required") else req.tool_choice or "auto")
        body["parallel_tool_calls"] = req.parallel_tool_calls
        tools = ToolUse("auto", tools.names, tools.definitions, OURS, tools.parallel)  # the calls arrive whole
    if req.response_format is not None:
        fmt = req.response_format
        body["response_format"] = fmt if fmt["type"] != "json_schema" else {
            "type": "json_schema", "json_schema": {"name": "response", "schema": fmt["schema"]}}
    return RequestPlan(engine.model_id, [], _sampling(req, limits, req.max_tokens, constrained=constrained),
                       req.max_tokens, tools, body=body)


def build_plan(engine, req: ChatRequest, limits: Limits) -> RequestPlan:
    """Render, budget and parameterise `req` for `engine` (which provides the tokenizer, the
    context length and the grammar compiler). Raises UsageError for anything out of bounds."""
    if getattr(engine, "remote", False):
        return _remote_plan(engine, req, limits)
    tools = _tool_use(req, tool_format(engine.tokenizer))
    grammar = _grammar(engine, req, tools)
    try:
        rendered, max_tokens = _budget(engine, req, limits, tools)
    except UsageError as e:
        e.param = e.param or "messages"  # what a conversation holds is what failed to render
        raise
    params = _sampling(req, limits, max_tokens, grammar)
    return RequestPlan(engine.model_id, rendered.ids, params, max_tokens, tools, rendered.dropped,
                       getattr(rendered, "pixels", None))
