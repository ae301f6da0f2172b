"""Conversations as message trees, and the streaming answer endpoint (the app API).

Thin: the tree operations live in store/conversations.py, a turn's serving work in
serving/conversation.py; this module parses, authorises and shapes. A turn streams as SSE events
`start` (the stored user message and the `streaming` answer), `delta`*, then `done` or `error`
(the finished answer), then `data: [DONE]`. A side-by-side vote turn's `start` also lists both
answers (`assistant_messages`); deltas name their answer, and each answer gets its `done`.
"""

import json
from collections.abc import Iterable

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse

from chatloop.engine.scheduler import GenerationResult
from chatloop.server.api.schemas import (
    ConversationCreate, ConversationPatch, SendMessage, conversation_out, message_out,
)
from chatloop.server.auth import Principal
from chatloop.server.deps import Services, principal, services
from chatloop.server.errors import APIError
from chatloop.server.sse import EventStreamResponse
from chatloop.serving.conversation import Turn, TurnOptions, start_turn
from chatloop.serving.run import DONE, sse
from chatloop.store import attachments, conversations as convs
from chatloop.store.models import Conversation

router = APIRouter(prefix="/api", tags=["conversations"])


@router.get("/models")
def models(p: Principal = Depends(principal), svc: Services = Depends(services)):
    return svc.chat.menu(admin=p.user.is_admin)


@router.get("/conversations")
def list_conversations(q: str | None = Query(default=None, max_length=200), archived: bool = False,
                       p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        return [conversation_out(c) for c in convs.search(s, p.user.id, q, archived)]


@router.post("/conversations", status_code=201)
def create_conversation(body: ConversationCreate, p: Principal = Depends(principal), svc: Services = Depends(services)):
    svc.chat.resolve(body.model)  # an unknown model is refused now, not at the first message
    conv = Conversation(user_id=p.user.id, title=body.title or "", model=body.model or "default",
                        system_prompt=body.system_prompt or "")
    with svc.db.session() as s:
        s.add(conv)
    return conversation_out(conv)


@router.get("/conversations/{conv_id}")
def get_conversation(conv_id: str, p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        conv = convs.own_conversation(s, p.user.id, conv_id)
        rows = convs.messages_with_feedback(s, p.user.id, conv)
        images = attachments.of_messages(s, [m.id for m, _, _ in rows if m.role == "user"])
        return {**conversation_out(conv), "messages": [message_out(m, f, voted, images.get(m.id))
                                                        for m, f, voted in rows]}


@router.patch("/conversations/{conv_id}")
def update_conversation(conv_id: str, body: ConversationPatch, p: Principal = Depends(principal),
                        svc: Services = Depends(services)):
    if body.model is not None:
        svc.chat.resolve(body.model)
    with svc.db.session() as s:
        return conversation_out(convs.update(s, p.user.id, conv_id, body.model_dump(exclude_unset=True)))


@router.delete("/conversations/{conv_id}", status_code=204)
def delete_conversation(conv_id: str, p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        s.delete(convs.own_conversation(s, p.user.id, conv_id))
    return Response(status_code=204)


@router.get("/conversations/{conv_id}/export")
def export_conversation(conv_id: str, format: str = Query(default="json", pattern="^(json|markdown)$"),
                        p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        conv = convs.own_conversation(s, p.user.id, conv_id)
        path = convs.current_branch(s, conv)
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


class TurnSink:
    """Encodes a turn as the app's SSE events and records each answer when the run ends."""

    def __init__(self, turn: Turn):
        self.turn = turn
        self.parts: list[list[str]] = [[] for _ in turn.answers]

    def start(self) -> Iterable[str]:
        user = None
        if self.turn.user_message:
            user = message_out(self.turn.user_message, attachments=self.turn.context.new_attachments)
        answers = [message_out(a) for a in self.turn.answers]
        event = {"type": "start", "user_message": user, "assistant_message": answers[0]}
        if self.turn.duel:  # two answers side by side, for a vote
            event["assistant_messages"] = answers
        return [sse(event)]

    def delta(self, index: int, text: str) -> Iterable[str]:
        self.parts[index].append(text)
        return [sse({"type": "delta", "message_id": self.turn.answers[index].id, "text": text})]

    def finish(self, index: int, result: GenerationResult) -> Iterable[str]:
        return []

    async def end(self, results: list[GenerationResult | None], disconnected: bool) -> Iterable[str]:
        out = []
        for i, result in enumerate(results):
            final = message_out(await self.turn.finish(i, result, "".join(self.parts[i])))
            if result is not None and result.finish_reason == "error":
                out.append(sse({"type": "error", "message": final, "error": result.error}))
            else:
                out.append(sse({"type": "done", "message": final}))
        return [] if disconnected else out + [DONE]


@router.post("/conversations/{conv_id}/messages")
async def send_message(conv_id: str, body: SendMessage, request: Request, p: Principal = Depends(principal),
                       svc: Services = Depends(services)):
    if body.attachments and len(body.attachments) > svc.chat.images.limits.max_images:
        raise APIError(400, f"too many images: at most {svc.chat.images.limits.max_images} per message",
                       param="attachments", code="too_many_images")
    content = "" if body.content is None and body.attachments else body.content  # an image alone is a message
    options = TurnOptions(content=content, attachments=body.attachments, regenerate_from=body.regenerate_from,
                          max_tokens=body.max_tokens,
                          seed=body.seed, compare=body.compare,
                          **body.model_dump(include={"parent_id"}, exclude_unset=True),
                          **{k: v for k, v in (("temperature", body.temperature), ("top_p", body.top_p))
                             if v is not None})
    turn = await start_turn(svc.chat, svc.db, p.user.id, conv_id, options, vote_share=svc.settings.vote_share)
    return EventStreamResponse(svc.chat.drive(turn.run, TurnSink(turn), request.receive))
