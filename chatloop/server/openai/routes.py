"""OpenAI-compatible routes: GET /v1/models, POST /v1/chat/completions (JSON or SSE stream).

Stateless as at OpenAI (nothing is stored but a usage row). Thin: refuse what is unsupported,
hand the request to the chat service (serving/), shape the answer (openai/serving.py). The
response's `model` is the exact version that answered.
"""

import logging
import time

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from chatloop.engine.scheduler import GenerationResult
from chatloop.errors import DatabaseUnavailable
from chatloop.server.auth import Principal
from chatloop.server.deps import Services, principal, services
from chatloop.server.errors import APIError
from chatloop.server.openai import serving
from chatloop.server.openai.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    ModelCard,
    ModelList,
    NamedToolChoice,
)
from chatloop.server.routing import JSONRoute, errors_doc
from chatloop.server.sse import EventStreamResponse
from chatloop.store.models import UsageRecord

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["openai"], route_class=JSONRoute)
STARTED = int(time.time())


@router.get("/models", response_model=ModelList)
def list_models(_: Principal = Depends(principal), svc: Services = Depends(services)) -> ModelList:
    return ModelList(data=[ModelCard(id=m["id"], created=STARTED) for m in svc.chat.menu()])


@router.get("/models/{model:path}", response_model=ModelCard, responses=errors_doc(404))
def retrieve_model(model: str, _: Principal = Depends(principal), svc: Services = Depends(services)) -> ModelCard:
    """One model of the list, by its id or the name a client sends (`default`, NAME)."""
    for m in svc.chat.menu():
        if model in (m["id"], m["name"], m["id"].split(":")[0]):
            return ModelCard(id=m["id"], created=STARTED)
    raise APIError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")


def _check_tool_choice(req: ChatCompletionRequest) -> None:
    """A forced tool_choice must name something `tools` holds (OpenAI answers 400 otherwise)."""
    names = {t.function.name for t in req.tools or []}
    choice = req.tool_choice
    if isinstance(choice, NamedToolChoice):
        name = choice.function.get("name")
        if not name:
            raise APIError(400, "tool_choice.function.name is required", param="tool_choice", code="invalid_value")
        if name not in names:
            raise APIError(400, f"tool_choice names the function {name!r}, which is not in tools",
                           param="tool_choice", code="invalid_value")
    elif choice == "required" and not names:
        raise APIError(400, "tool_choice 'required' needs tools", param="tool_choice", code="invalid_value")


def _usage_logger(svc: Services, p: Principal, model: str, started: float):
    def write(results: list[GenerationResult], status: int) -> None:
        with svc.db.session() as s:
            s.add(UsageRecord(
                user_id=p.user.id, api_key_id=p.api_key_id, endpoint="chat.completions", model_version=model,
                prompt_tokens=results[0].prompt_tokens if results else 0,
                completion_tokens=sum(r.completion_tokens for r in results),
                latency_ms=(time.perf_counter() - started) * 1000, status_code=status,
            ))

    async def log(results: list[GenerationResult], status: int) -> None:
        try:
            await run_in_threadpool(write, results, status)
        except DatabaseUnavailable:  # the answer is done; only its usage row (metrics) is lost
            logger.warning("usage of a /v1 request not recorded: the database is unavailable")

    return log


@router.post("/chat/completions", response_model=ChatCompletion, responses={
    200: {"description": "A chat.completion, or with `stream: true` chat.completion.chunk server-sent events "
                         "ending with `data: [DONE]`.",
          "content": {"text/event-stream": {}}},
    **errors_doc((404, "No such model (`param` model, `code` model_not_found)."), 503, 504)})
async def chat_completions(req: ChatCompletionRequest, request: Request, p: Principal = Depends(principal),
                           svc: Services = Depends(services)):
    started = time.perf_counter()
    _check_tool_choice(req)
    run = await svc.chat.start(req.model, serving.chat_request(req), key=req.user)  # `user` keeps a canary sticky
    log_usage = _usage_logger(svc, p, run.model_id, started)
    completion_id = serving.new_completion_id()
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        sink = serving.ChunkSink(completion_id, run.model_id, len(run.handles), run.plan.tools, include_usage,
                                 log_usage)
        return EventStreamResponse(svc.chat.drive(run, sink, request.receive))
    results = await svc.chat.collect(run, serving.CollectSink(log_usage), request.receive)
    failed = next((r for r in results if r.finish_reason == "error"), None)
    if failed is not None:
        status = 400 if failed.input_error else 500
        body = serving.error_body(failed)["error"]
        raise APIError(status, body["message"], code=body["code"])
    return serving.completion(completion_id, run.model_id, run.plan.tools, results)
