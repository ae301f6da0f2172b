"""The /v1 chat-completions serving class: an OpenAI request in, a ChatCompletion or a chunk stream out.

It only translates: `chat_request` maps the protocol model onto the chat service's ChatRequest,
`ChunkSink` encodes a run's events as `chat.completion.chunk` SSE (the stream ends with
`data: [DONE]`), `completion` shapes collected results. Both log one usage row per request. With
tools (`tool_choice` auto) a streamed answer's text arrives as it is decoded, except what may be
the start of a call; each call arrives once complete, as `tool_calls` deltas (id, type and name,
then the arguments). Forced calls arrive at the end. With `parallel_tool_calls: false` an answer
ends at its first call (models/tool_calls.py says what that drops).
"""

import secrets
import time
from collections.abc import Awaitable, Callable, Iterable

from chatloop.engine.scheduler import GenerationResult
from chatloop.models.tool_calls import ToolCall as Call
from chatloop.server.openai.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    FunctionCall,
    FunctionCallDelta,
    NamedToolChoice,
    PromptTokensDetails,
    ResponseMessage,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from chatloop.serving.plan import ChatRequest, ToolUse
from chatloop.serving.run import DONE, sse

LogUsage = Callable[[list[GenerationResult], int], Awaitable[None]]


def message(m: ChatMessage) -> dict:
    """One request message for the chat service: a tool result keeps the call it answers
    (`tool_call_id`) and a message its `name`, for templates that render them."""
    out = {"role": "system" if m.role == "developer" else m.role,
           "content": m.content if m.content is not None else "", "tool_calls": m.tool_calls}
    extra = {"tool_call_id": m.tool_call_id, "name": m.name}
    return out | {k: v for k, v in extra.items() if v is not None}


def chat_request(req: ChatCompletionRequest) -> ChatRequest:
    tool_choice = req.tool_choice
    if isinstance(tool_choice, NamedToolChoice):
        tool_choice = tool_choice.function.get("name")
    fmt = req.response_format
    response_format = None
    if fmt is not None and fmt.type != "text":
        response_format = {"type": fmt.type, **({"schema": fmt.json_schema.schema_} if fmt.json_schema else {})}
    return ChatRequest(
        messages=[message(m) for m in req.messages],
        max_tokens=req.max_completion_tokens or req.max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        frequency_penalty=req.frequency_penalty or 0.0,
        presence_penalty=req.presence_penalty or 0.0,
        seed=req.seed,
        stop=(req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ()),
        n=req.n or 1,
        tools=[t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None,
        tool_choice=tool_choice,
        parallel_tool_calls=req.parallel_tool_calls is not False,  # OpenAI's default: true
        response_format=response_format,
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        logit_bias={int(token): bias for token, bias in req.logit_bias.items()} if req.logit_bias else None,
    )


def usage(results: list[GenerationResult | None]) -> Usage:
    done = [r for r in results if r is not None]
    prompt = done[0].prompt_tokens if done else 0
    completion = sum(r.completion_tokens for r in done)
    cached = PromptTokensDetails(cached_tokens=done[0].cached_tokens if done else 0)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                 prompt_tokens_details=cached)


def _shape(tools: ToolUse, result: GenerationResult) -> tuple[str | None, list[ToolCall] | None, str]:
    """(content, tool_calls, finish_reason) of one choice."""
    content, calls = tools.extract(result.text)
    if not calls:
        return content, None, result.finish_reason
    return content, [ToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments)) for c in calls], \
        "tool_calls"


def status(results: list[GenerationResult | None], disconnected: bool) -> int:
    """The HTTP status a request's outcome amounts to (499: the client left first)."""
    if disconnected:
        return 499
    failed = [r for r in results if r is None or r.finish_reason == "error"]
    if not failed:
        return 200
    return 400 if all(r is not None and r.input_error for r in failed) else 500


def error_body(result: GenerationResult) -> dict:
    kind = "invalid_request_error" if result.input_error else "server_error"
    code = "invalid_schema" if result.input_error else "engine_error"
    return {"error": {"message": f"generation failed: {result.error}", "type": kind, "param": None, "code": code}}


def completion(completion_id: str, model: str, tools: ToolUse, results: list[GenerationResult]) -> ChatCompletion:
    choices = []
    for i, result in enumerate(results):
        content, calls, finish = _shape(tools, result)
        logprobs = None if result.logprobs is None else ChoiceLogprobs(content=result.logprobs)
        choices.append(Choice(index=i, message=ResponseMessage(content=content, tool_calls=calls), logprobs=logprobs,
                              finish_reason=finish))
    return ChatCompletion(id=completion_id, model=model, choices=choices, usage=usage(results))


def new_completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


class ChunkSink:
    """Encodes a run as OpenAI chat.completion.chunk events."""

    def __init__(self, completion_id: str, model: str, n: int, tools: ToolUse, include_usage: bool,
                 log_usage: LogUsage):
        self.id, self.model, self.n, self.tools = completion_id, model, n, tools
        self.include_usage, self.log_usage = include_usage, log_usage
        self.created = int(time.time())
        self.parsers = [tools.parser() for _ in range(n)]  # None: no tools, every delta is content
        self.calls = [0] * n  # calls sent so far, per choice

    def _chunk(self, choices: list[ChunkChoice], usage_: Usage | None = None) -> str:
        return sse(ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices,
                                       usage=usage_))

    def start(self) -> Iterable[str]:
        return [self._chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content=""))]) for i in range(self.n)]

    def _pieces(self, index: int, pieces: list, logprobs: list[dict] = ()) -> list[str]:
        """Content and completed calls (a parser's output) as chunks; the tokens' logprobs go with the
        first content (in a chunk of their own where a parser holds the text back)."""
        out = []
        for piece in pieces:
            if not isinstance(piece, Call):
                out.append(self._chunk([ChunkChoice(index=index, delta=Delta(content=piece),
                                                    logprobs=ChoiceLogprobs(content=logprobs) if logprobs else None)]))
                logprobs = ()
                continue
            k = self.calls[index]
            self.calls[index] += 1
            head = ToolCallDelta(index=k, id=piece.id, type="function",
                                 function=FunctionCallDelta(name=piece.name, arguments=""))
            args = ToolCallDelta(index=k, function=FunctionCallDelta(arguments=piece.arguments))
            out += [self._chunk([ChunkChoice(index=index, delta=Delta(tool_calls=[d]))]) for d in (head, args)]
        if logprobs:
            out.append(self._chunk([ChunkChoice(index=index, delta=Delta(), logprobs=ChoiceLogprobs(content=logprobs))]))
        return out

    def delta(self, index: int, text: str, logprobs: list[dict] = ()) -> Iterable[str]:
        parser = self.parsers[index]
        return self._pieces(index, [text] if parser is None else parser.feed(text), logprobs)

    def finish(self, index: int, result: GenerationResult) -> Iterable[str]:
        if result.finish_reason == "error":
            return [sse(error_body(result))]
        parser = self.parsers[index]
        out = self._pieces(index, [] if parser is None else parser.finish())
        finish = "tool_calls" if self.calls[index] else result.finish_reason
        out.append(self._chunk([ChunkChoice(index=index, delta=Delta(), finish_reason=finish)]))
        return out

    async def end(self, results: list[GenerationResult | None], disconnected: bool) -> Iterable[str]:
        await self.log_usage([r for r in results if r is not None], status(results, disconnected))
        if disconnected:
            return []
        return ([self._chunk([], usage(results))] if self.include_usage else []) + [DONE]


class CollectSink:
    """For a JSON answer: nothing to encode as it runs; logs usage at the end."""

    def __init__(self, log_usage: LogUsage):
        self.log_usage = log_usage

    def start(self) -> Iterable[str]:
        return []

    def delta(self, index: int, text: str, logprobs: list[dict] = ()) -> Iterable[str]:
        return []

    def finish(self, index: int, result: GenerationResult) -> Iterable[str]:
        return []

    async def end(self, results: list[GenerationResult | None], disconnected: bool) -> Iterable[str]:
        await self.log_usage([r for r in results if r is not None], status(results, disconnected))
        return []
