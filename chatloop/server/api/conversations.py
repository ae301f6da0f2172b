"""Conversations as message trees, and the streaming answer endpoint.

Storage rules (DESIGN.md): the user message and an empty assistant message (status `streaming`)
are committed before the stream starts; the answer is finalised as `complete`, `stopped` (client
went away: the partial text is kept) or `error`. Server start marks leftovers `interrupted`.
"""

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from sqlalchemy import exists, func, select
from starlette.concurrency import run_in_threadpool

from chatloop.engine.sampling import SamplingParams
from chatloop.engine.scheduler import GenerationResult
from chatloop.errors import ChatloopError
from chatloop.models.chat_format import render_conversation
from chatloop.server.auth import Principal
from chatloop.server.deps import Services, principal, services
from chatloop.server.errors import APIError, from_chatloop_error, not_found
from chatloop.server.api.schemas import (
    ConversationCreate, ConversationPatch, SendMessage, conversation_out, message_out,
)
from chatloop.server.streaming import EventStream
from chatloop.store.models import Conversation, Feedback, Message, User

router = APIRouter(prefix="/api", tags=["conversations"])
DEFAULT_MAX_TOKENS = 512
TITLE_CHARS = 60


def own_conversation(s, p: Principal, conv_id: str) -> Conversation:
    conv = s.get(Conversation, conv_id)
    if conv is None or conv.user_id != p.user.id:
        raise not_found("conversation")  # another user's conversation is indistinguishable from none
    return conv


def own_message(s, p: Principal, message_id: str) -> tuple[Message, Conversation]:
    msg = s.get(Message, message_id)
    if msg is None:
        raise not_found("message")
    conv = s.get(Conversation, msg.conversation_id)
    if conv is None or conv.user_id != p.user.id:
        raise not_found("message")
    return msg, conv


def branch(messages: dict[str, Message], leaf_id: str | None) -> list[Message]:
    """The path from the root to `leaf_id` (the branch the user sees)."""
    path = []
    while leaf_id is not None and leaf_id in messages:
        path.append(messages[leaf_id])
        leaf_id = messages[leaf_id].parent_id
    return path[::-1]


def _check_model(svc: Services, model: str | None) -> None:
    if model is not None and model not in svc.model_names:
        raise APIError(404, f"the model '{model}' is not served here", param="model", code="model_not_found")


@router.get("/models")
def models(_: Principal = Depends(principal), svc: Services = Depends(services)):
    return [{"id": svc.engine.model_id, "name": "default", "default": True}]


@router.get("/conversations")
def list_conversations(q: str | None = Query(default=None, max_length=200), archived: bool = False,
                       p: Principal = Depends(principal), svc: Services = Depends(services)):
    stmt = select(Conversation).where(Conversation.user_id == p.user.id, Conversation.archived == archived)
    if q:
        needle = q.lower()
        in_messages = exists().where(Message.conversation_id == Conversation.id,
                                     func.lower(Message.content).contains(needle, autoescape=True))
        stmt = stmt.where(func.lower(Conversation.title).contains(needle, autoescape=True) | in_messages)
    with svc.db.session() as s:
        rows = s.scalars(stmt.order_by(Conversation.updated_at.desc()).limit(500))
        return [conversation_out(c) for c in rows]


@router.post("/conversations", status_code=201)
def create_conversation(body: ConversationCreate, p: Principal = Depends(principal), svc: Services = Depends(services)):
    _check_model(svc, body.model)
    conv = Conversation(user_id=p.user.id, title=body.title or "", model=body.model or "default",
                        system_prompt=body.system_prompt or "")
    with svc.db.session() as s:
        s.add(conv)
    return conversation_out(conv)


def _messages_with_feedback(s, p: Principal, conv: Conversation) -> list[dict]:
    msgs = list(s.scalars(select(Message).where(Message.conversation_id == conv.id).order_by(Message.created_at)))
    fb = {f.message_id: f for f in s.scalars(select(Feedback).where(
        Feedback.user_id == p.user.id, Feedback.message_id.in_([m.id for m in msgs])))}
    return [message_out(m, fb.get(m.id)) for m in msgs]


@router.get("/conversations/{conv_id}")
def get_conversation(conv_id: str, p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        conv = own_conversation(s, p, conv_id)
        return {**conversation_out(conv), "messages": _messages_with_feedback(s, p, conv)}


@router.patch("/conversations/{conv_id}")
def update_conversation(conv_id: str, body: ConversationPatch, p: Principal = Depends(principal),
                        svc: Services = Depends(services)):
    _check_model(svc, body.model)
    with svc.db.session() as s:
        conv = own_conversation(s, p, conv_id)
        changes = body.model_dump(exclude_unset=True)
        if "current_leaf_id" in changes:
            leaf = s.get(Message, changes["current_leaf_id"]) if changes["current_leaf_id"] else None
            if changes["current_leaf_id"] and (leaf is None or leaf.conversation_id != conv.id):
                raise APIError(400, "current_leaf_id is not a message of this conversation", param="current_leaf_id")
        for field, value in changes.items():
            if value is not None or field == "current_leaf_id":
                setattr(conv, field, value)
        conv.updated_at = datetime.now(UTC)
    return conversation_out(conv)


@router.delete("/conversations/{conv_id}", status_code=204)
def delete_conversation(conv_id: str, p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        s.delete(own_conversation(s, p, conv_id))
    return Response(status_code=204)


@router.get("/conversations/{conv_id}/export")
def export_conversation(conv_id: str, format: str = Query(default="json", pattern="^(json|markdown)$"),
                        p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        conv = own_conversation(s, p, conv_id)
        msgs = {m.id: m for m in s.scalars(select(Message).where(Message.conversation_id == conv.id))}
    path = branch(msgs, conv.current_leaf_id)
    name = f"conversation-{conv.id}"
    if format == "json":
        body = {**conversation_out(conv), "messages": [message_out(m) for m in path]}
        return Response(json.dumps(body, ensure_ascii=False, indent=2), media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{name}.json"'})
    lines = [f"# {conv.title or 'Conversation'}", ""]
    if conv.system_prompt:
        lines += [f"_System: {conv.system_prompt}_", ""]
    for m in path:
        lines += [f"**{m.role.capitalize()}**" + (f" ({m.model_version})" if m.model_version else ""), "", m.content, ""]
    return PlainTextResponse("\n".join(lines), media_type="text/markdown",
                             headers={"Content-Disposition": f'attachment; filename="{name}.md"'})


# --- sending a message and streaming the answer -------------------------------------------------

@dataclass
class _Prepared:
    user_message: dict | None
    assistant: Message
    prompt_ids: list[int]
    params: SamplingParams
    needs_title: bool


def _prepare(svc: Services, p: Principal, conv_id: str, body: SendMessage) -> _Prepared:
    if (body.content is None) == (body.regenerate_from is None):
        raise APIError(400, "send either 'content' (a new message) or 'regenerate_from' (a user message id)",
                       param="content")
    # Room kept for the answer: older turns are dropped to make it. By default at most half the
    # context, so a small-context model still sees the conversation.
    max_tokens = body.max_tokens or min(DEFAULT_MAX_TOKENS, svc.engine.max_len // 2)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.7 if body.temperature is None else body.temperature,
                            top_p=0.9 if body.top_p is None else body.top_p, seed=body.seed)
    with svc.db.session() as s:
        conv = own_conversation(s, p, conv_id)
        msgs = {m.id: m for m in s.scalars(select(Message).where(Message.conversation_id == conv.id))}
        user_msg = None
        if body.regenerate_from is not None:
            parent = msgs.get(body.regenerate_from)
            if parent is None or parent.role != "user":
                raise APIError(400, "regenerate_from must be a user message of this conversation",
                               param="regenerate_from")
        else:
            parent_id = body.parent_id if "parent_id" in body.model_fields_set else conv.current_leaf_id
            if parent_id is not None and parent_id not in msgs:
                raise APIError(400, "parent_id is not a message of this conversation", param="parent_id")
            parent = user_msg = Message(conversation_id=conv.id, parent_id=parent_id, role="user", content=body.content)
            s.add(user_msg)
            s.flush()  # assigns its id
            msgs[user_msg.id] = user_msg
        history = [m for m in branch(msgs, parent.id) if m.role == "user" or m.content]
        owner = s.get(User, p.user.id)
        system = conv.system_prompt or owner.custom_instructions
        convo = ([{"role": "system", "content": system}] if system else []) + [
            {"role": m.role, "content": m.content} for m in history]
        try:
            rendered = render_conversation(svc.engine.tokenizer, convo, add_generation_prompt=True,
                                           max_tokens=svc.engine.max_len - max_tokens)
        except ChatloopError as e:
            raise from_chatloop_error(e) from e
        assistant = Message(conversation_id=conv.id, parent_id=parent.id, role="assistant", content="",
                            status="streaming", model_version=svc.engine.model_id, temperature=params.temperature,
                            top_p=params.top_p, max_tokens=max_tokens, seed=body.seed)
        s.add(assistant)
        s.flush()
        conv.current_leaf_id = assistant.id
        conv.updated_at = datetime.now(UTC)
        needs_title = not conv.title
        out_user = message_out(user_msg) if user_msg else None
    return _Prepared(out_user, assistant, rendered.ids, params, needs_title)


def _finalize(svc: Services, message_id: str, text: str, result: GenerationResult | None, needs_title: bool) -> dict:
    with svc.db.session() as s:
        msg = s.get(Message, message_id)
        msg.content = text
        if result is None:  # the client went away before the engine's final event
            msg.status, msg.finish_reason = "stopped", "cancelled"
        else:
            msg.status = {"cancelled": "stopped", "error": "error"}.get(result.finish_reason, "complete")
            msg.finish_reason = result.finish_reason
            msg.error = result.error
            msg.prompt_tokens, msg.completion_tokens = result.prompt_tokens, result.completion_tokens
            msg.ttft_ms = None if result.ttft_s is None else result.ttft_s * 1000
            msg.latency_ms = result.latency_s * 1000
        conv = s.get(Conversation, msg.conversation_id)
        if needs_title and conv is not None and not conv.title:
            first = s.get(Message, msg.parent_id)
            conv.title = _title(first.content if first else text)
        return message_out(msg)


def _title(text: str) -> str:
    words = " ".join(text.split())
    return words if len(words) <= TITLE_CHARS else words[: TITLE_CHARS - 1].rsplit(" ", 1)[0] + "…"


def _event(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


@router.post("/conversations/{conv_id}/messages")
async def send_message(conv_id: str, body: SendMessage, p: Principal = Depends(principal),
                       svc: Services = Depends(services)):
    prep = await run_in_threadpool(_prepare, svc, p, conv_id, body)
    try:
        stream = EventStream(svc.engine, prep.prompt_ids, prep.params)
    except ChatloopError as e:
        await run_in_threadpool(_finalize, svc, prep.assistant.id, "", _failed(str(e)), False)
        raise from_chatloop_error(e) from e

    async def events():
        started = time.perf_counter()
        parts: list[str] = []
        result: GenerationResult | None = None
        svc.metrics.active_streams.inc()
        try:
            yield _event({"type": "start", "user_message": prep.user_message,
                          "assistant_message": message_out(prep.assistant)})
            async for event in stream:
                if event.text:
                    parts.append(event.text)
                    yield _event({"type": "delta", "message_id": prep.assistant.id, "text": event.text})
                if event.finished:
                    result = event.result
            svc.metrics.observe_generation(result)
            final = await run_in_threadpool(_finalize, svc, prep.assistant.id, result.text, result, prep.needs_title)
            if result.finish_reason == "error":
                yield _event({"type": "error", "message": final, "error": result.error})
            else:
                yield _event({"type": "done", "message": final})
            yield "data: [DONE]\n\n"
        finally:
            svc.metrics.active_streams.dec()
            if result is None:  # disconnected mid-stream: keep the partial answer as `stopped`
                stream.handle.cancel()
                await asyncio.shield(run_in_threadpool(
                    _finalize, svc, prep.assistant.id, "".join(parts), None, prep.needs_title))
            svc.metrics.latency.labels("stream").observe(time.perf_counter() - started)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _failed(error: str) -> GenerationResult:
    return GenerationResult(text="", token_ids=[], finish_reason="error", prompt_tokens=0, completion_tokens=0,
                            model="", ttft_s=None, latency_s=0.0, error=error)
