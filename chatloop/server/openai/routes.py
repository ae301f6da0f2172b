"""OpenAI-compatible routes: GET /v1/models, POST /v1/chat/completions (JSON or SSE stream).

Stateless as at OpenAI (nothing is stored but a usage row). Thin: validate, render the prompt with
the one chat format, hand it to the engine, shape the answer.

`response_format` json_schema/json_object and forced tool calls (`tool_choice` "required" or a
named function) use constrained decoding (engine/constrain.py), so the JSON always parses unless
max_tokens cuts it. With `tool_choice` "auto" the model decides; a `<tool_call>` it writes becomes
`tool_calls`. While tools are active a streamed answer arrives whole at the end, since whether it
is a call is only known then.
"""

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from chatloop.engine.sampling import SamplingParams
from chatloop.engine.scheduler import GenerationResult
from chatloop.models.chat_format import parse_tool_calls, render_conversation
from chatloop.server.auth import Principal
from chatloop.server.deps import Services, principal, services
from chatloop.server.errors import APIError
from chatloop.server.openai.protocol import (
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice, ChunkChoice, Delta, FunctionCall, ModelCard,
    ModelList, NamedToolChoice, ResponseMessage, ToolCall, ToolCallDelta, Usage,
)
from chatloop.server.streaming import EventStream
from chatloop.store.models import UsageRecord

router = APIRouter(prefix="/v1", tags=["openai"])
STARTED = int(time.time())


@router.get("/models", response_model=ModelList)
def list_models(_: Principal = Depends(principal), svc: Services = Depends(services)) -> ModelList:
    return ModelList(data=[ModelCard(id=svc.engine.model_id, created=STARTED)])


def _unsupported(req: ChatCompletionRequest) -> None:
    checks = [
        (bool(req.logit_bias), "logit_bias", "logit_bias is not supported"),
        (bool(req.logprobs) or req.top_logprobs is not None, "logprobs", "logprobs are not supported"),
    ]
    for failed, param, message in checks:
        if failed:
            raise APIError(400, message, param=param, code="unsupported_parameter")


def _tools_active(req: ChatCompletionRequest) -> bool:
    return bool(req.tools) and req.tool_choice != "none"


def _forced_tools(req: ChatCompletionRequest) -> list:
    """The tools the answer must call (tool_choice 'required' or a named function), else []."""
    if not _tools_active(req):
        return []
    if req.tool_choice == "required":
        return req.tools
    if isinstance(req.tool_choice, NamedToolChoice):
        return [t for t in req.tools if t.function.name == req.tool_choice.function["name"]]
    return []


def _call_schema(tool) -> dict:
    return {"type": "object", "properties": {
        "name": {"const": tool.function.name},
        "arguments": tool.function.parameters or {"type": "object"}},
        "required": ["name", "arguments"], "additionalProperties": False}


def _grammar(svc: Services, req: ChatCompletionRequest):
    """Compiled grammar for response_format json / forced tool calls (constrained decoding)."""
    forced = _forced_tools(req)
    fmt = req.response_format.type if req.response_format else "text"
    if forced and fmt != "text":
        raise APIError(400, "a forced tool call and a JSON response_format cannot be combined",
                       param="response_format")
    if forced:
        schemas = [_call_schema(t) for t in forced]
        return svc.engine.grammars.json_schema(schemas[0] if len(schemas) == 1 else {"anyOf": schemas})
    if fmt == "json_schema":
        return svc.engine.grammars.json_schema(req.response_format.json_schema.schema_)
    if fmt == "json_object":
        return svc.engine.grammars.json_object()
    return None


def _shape(req: ChatCompletionRequest, result: GenerationResult) -> tuple[str | None, list[ToolCall] | None, str]:
    """(content, tool_calls, finish_reason) of one choice."""
    if not _tools_active(req):
        return result.text, None, result.finish_reason
    if _forced_tools(req):
        try:
            payload = json.loads(result.text)
            calls = [{"name": payload["name"], "arguments": payload["arguments"]}]
        except (json.JSONDecodeError, KeyError, TypeError):
            return result.text, None, result.finish_reason  # cut off by max_tokens: not a call
        content = None
    else:
        content, calls = parse_tool_calls(result.text, {t.function.name for t in req.tools})
        if not calls:
            return result.text, None, result.finish_reason
    tool_calls = [ToolCall(id="call_" + secrets.token_hex(8),
                           function=FunctionCall(name=c["name"], arguments=json.dumps(c["arguments"],
                                                                                    ensure_ascii=False)))
                  for c in calls]
    return content or None, tool_calls, "tool_calls"


def _params(req: ChatCompletionRequest, max_tokens: int | None, index: int, grammar=None) -> SamplingParams:
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=req.temperature if req.temperature is not None else 1.0,
        top_p=req.top_p if req.top_p is not None else 1.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        presence_penalty=req.presence_penalty or 0.0,
        seed=None if req.seed is None else req.seed + index,
        stop=stop,
        grammar=grammar,
    )


def _prompt(svc: Services, req: ChatCompletionRequest) -> list[int]:
    messages = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.content if m.content is not None else "",
         "tool_calls": m.tool_calls}
        for m in req.messages
    ]
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if _tools_active(req) else None
    ids = render_conversation(svc.engine.tokenizer, messages, add_generation_prompt=True, tools=tools).ids
    budget = svc.engine.max_len - len(ids)
    wanted = req.max_completion_tokens or req.max_tokens
    if budget <= 0 or (wanted and wanted > budget):
        raise APIError(400, f"this model's context is {svc.engine.max_len} tokens; the messages take {len(ids)} "
                       f"and {wanted or 1} more were requested", param="messages", code="context_length_exceeded")
    return ids


def _log_usage(svc: Services, p: Principal, results: list[GenerationResult], started: float, status: int) -> None:
    with svc.db.session() as s:
        s.add(UsageRecord(
            user_id=p.user.id, api_key_id=p.api_key_id, endpoint="chat.completions", model_version=svc.engine.model_id,
            prompt_tokens=sum(r.prompt_tokens for r in results[:1]),
            completion_tokens=sum(r.completion_tokens for r in results),
            latency_ms=(time.perf_counter() - started) * 1000, status_code=status,
        ))


def _usage(results: list[GenerationResult]) -> Usage:
    prompt = results[0].prompt_tokens if results else 0
    completion = sum(r.completion_tokens for r in results)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


@router.post("/chat/completions", response_model=ChatCompletion)
async def chat_completions(
    req: ChatCompletionRequest, p: Principal = Depends(principal), svc: Services = Depends(services)
):
    started = time.perf_counter()
    if req.model not in svc.model_names:
        raise APIError(404, f"the model '{req.model}' does not exist; this server serves {svc.engine.model_id} "
                       "(also reachable as 'default')", param="model", code="model_not_found")
    _unsupported(req)
    ids = await run_in_threadpool(_prompt, svc, req)
    grammar = await run_in_threadpool(_grammar, svc, req)
    max_tokens = req.max_completion_tokens or req.max_tokens
    streams = [EventStream(svc.engine, ids, _params(req, max_tokens, i, grammar)) for i in range(req.n or 1)]
    completion_id = "chatcmpl-" + secrets.token_hex(12)
    if req.stream:
        body = _stream(svc, p, req, streams, completion_id, started)
        return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    finals = await asyncio.gather(*(s.collect() for s in streams))
    results = [f.result for f in finals]
    for r in results:
        svc.metrics.observe_generation(r)
    if any(r.finish_reason == "error" for r in results):
        await run_in_threadpool(_log_usage, svc, p, results, started, 500)
        raise APIError(500, f"generation failed: {next(r.error for r in results if r.error)}", code="engine_error")
    await run_in_threadpool(_log_usage, svc, p, results, started, 200)
    return ChatCompletion(
        id=completion_id,
        model=svc.engine.model_id,
        choices=[_choice(req, i, r) for i, r in enumerate(results)],
        usage=_usage(results),
    )


def _choice(req: ChatCompletionRequest, index: int, result: GenerationResult) -> Choice:
    content, tool_calls, finish = _shape(req, result)
    return Choice(index=index, message=ResponseMessage(content=content, tool_calls=tool_calls), finish_reason=finish)


def _sse(obj) -> str:
    payload = obj.model_dump_json(exclude_none=False) if hasattr(obj, "model_dump_json") else json.dumps(obj)
    return f"data: {payload}\n\n"


async def _stream(svc: Services, p: Principal, req: ChatCompletionRequest, streams: list[EventStream],
                  completion_id: str, started: float) -> AsyncIterator[str]:
    created = int(time.time())
    model = svc.engine.model_id

    def chunk(choices, usage=None) -> str:
        return _sse(ChatCompletionChunk(id=completion_id, created=created, model=model, choices=choices, usage=usage))

    merged: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, stream: EventStream) -> None:
        async for event in stream:
            await merged.put((index, event))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    buffered = _tools_active(req)  # a tool call is only known once the answer is complete
    svc.metrics.active_streams.inc()
    results: dict[int, GenerationResult] = {}
    try:
        for i in range(len(streams)):
            yield chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content=""))])
        while len(results) < len(streams):
            index, event = await merged.get()
            if event.text and not buffered:
                yield chunk([ChunkChoice(index=index, delta=Delta(content=event.text))])
            if event.finished:
                results[index] = event.result
                svc.metrics.observe_generation(event.result)
                if event.result.finish_reason == "error":
                    yield _sse({"error": {"message": f"generation failed: {event.result.error}",
                                          "type": "server_error", "param": None, "code": "engine_error"}})
                    continue
                finish = event.result.finish_reason
                if buffered:
                    content, calls, finish = _shape(req, event.result)
                    deltas = [ToolCallDelta(index=j, **c.model_dump()) for j, c in enumerate(calls or [])]
                    yield chunk([ChunkChoice(index=index, delta=Delta(content=content, tool_calls=deltas or None))])
                yield chunk([ChunkChoice(index=index, delta=Delta(), finish_reason=finish)])
        if req.stream_options and req.stream_options.include_usage:
            yield chunk([], usage=_usage([results[i] for i in sorted(results)]))
        yield "data: [DONE]\n\n"
    finally:
        svc.metrics.active_streams.dec()
        for task in tasks:
            task.cancel()
        for stream in streams:
            if stream.handle.result is None:
                stream.handle.cancel()
        done = [results[i] for i in sorted(results)]
        status = 200 if len(done) == len(streams) else 499
        await asyncio.shield(run_in_threadpool(_log_usage, svc, p, done, started, status))
