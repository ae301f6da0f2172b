"""Conversations as message trees, and the streaming answer endpoint (the app API).

Thin: the tree operations live in store/conversations.py, a turn's serving work in
serving/conversation.py; this module parses, authorises and shapes. A turn streams as SSE events
`start` (the stored user message and the `streaming` answer), `delta`*, then `done` or `error`
(the finished answer), then `data: [DONE]`. A side-by-side vote turn's `start` also lists both
answers (`assistant_messages`); deltas name their answer, and each answer gets its `done`.

In a conversation that offers tools, an answer that calls tools continues the same stream (the
tool loop, serving/tool_loop.py): `tool_start` and `tool_result` (the stored `tool` message) per
call, then `assistant_start` (the next answer) and its deltas, until an answer calls nothing. A
call of a tool that is not read-only first asks the user: `approval` (the answer, now
`awaiting_approval`, and its calls) ends the stream, and `POST /api/messages/{id}/approval`
continues it the same way.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Iterable

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse

from chatloop.engine.scheduler import GenerationResult
from chatloop.errors import ChatloopError, UsageError
from chatloop.server.api.responses import ConversationDetail, ConversationOut, ModelEntry, ToolsOut
from chatloop.server.api.schemas import (
    ConversationCreate, ConversationPatch, SendMessage, ToolApproval, conversation_out, message_out,
)
from chatloop.server.auth import Principal
from chatloop.server.deps import Services, principal, services
from chatloop.server.errors import APIError
from chatloop.server.routing import JSONRoute, errors_doc
from chatloop.server.sse import EventStreamResponse
from chatloop.serving.conversation import Turn, TurnOptions, start_turn
from chatloop.serving.run import DONE, Receive, sse
from chatloop.serving.tool_loop import call_out, needs_approval, run_call
from chatloop.store import attachments, conversations as convs
from chatloop.store.models import Conversation, Message
from chatloop.tools.base import CallContext

router = APIRouter(prefix="/api", tags=["conversations"], route_class=JSONRoute)
MODEL_404 = (404, "No such model (`param` model), conversation, message or upload; another user's answers the same.")
STREAM = {"description": "The turn as server-sent events (module docstring; docs/api.md), ending with `data: [DONE]`.",
          "content": {"text/event-stream": {}}}


@router.get("/models", response_model=list[ModelEntry], response_model_exclude_unset=True)  # channels: admins
def models(p: Principal = Depends(principal), svc: Services = Depends(services)):
    return svc.chat.menu(admin=p.user.is_admin)


@router.get("/conversations", response_model=list[ConversationOut])
def list_conversations(q: str | None = Query(default=None, max_length=200), archived: bool = False,
                       p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        return [conversation_out(c) for c in convs.search(s, p.user.id, q, archived)]


@router.get("/tools", response_model=ToolsOut)
def list_tools(p: Principal = Depends(principal), svc: Services = Depends(services)):
    """The tools conversations can offer the model (built-ins, MCP servers' and plugins' tools);
    `failed` names the sources that are down, and why."""
    return {"tools": [spec.as_dict() for spec in svc.tools.specs()], "failed": svc.tools.failed()}


def _tools(svc: Services, names: list[str] | None) -> str | None:
    """A conversation's tool list, checked against the server's tools, as stored (JSON)."""
    if names is None:
        return None
    unknown = [n for n in names if svc.tools.spec(n) is None]
    if unknown:
        raise UsageError(f"unknown tools: {', '.join(unknown)} (GET /api/tools lists this server's tools)",
                         param="tools", code="unknown_tool")
    return json.dumps(list(dict.fromkeys(names)))


@router.post("/conversations", status_code=201, response_model=ConversationOut,
             responses=errors_doc((404, "No such model (`param` model).")))
def create_conversation(body: ConversationCreate, p: Principal = Depends(principal), svc: Services = Depends(services)):
    svc.chat.resolve(body.model)  # an unknown model is refused now, not at the first message
    conv = Conversation(user_id=p.user.id, title=body.title or "", model=body.model or "default",
                        system_prompt=body.system_prompt or "", tools=_tools(svc, body.tools))
    with svc.db.session() as s:
        s.add(conv)
    return conversation_out(conv)


@router.get("/conversations/{conv_id}", response_model=ConversationDetail,
            response_model_exclude_unset=True)  # tool_call_id and tool: on tool messages only
def get_conversation(conv_id: str, p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        conv = convs.own_conversation(s, p.user.id, conv_id)
        rows = convs.messages_with_feedback(s, p.user.id, conv)
        images = attachments.of_messages(s, [m.id for m, _, _ in rows if m.role == "user"])
        return {**conversation_out(conv), "messages": [message_out(m, f, voted, images.get(m.id))
                                                        for m, f, voted in rows]}


@router.patch("/conversations/{conv_id}", response_model=ConversationOut)
def update_conversation(conv_id: str, body: ConversationPatch, p: Principal = Depends(principal),
                        svc: Services = Depends(services)):
    if body.model is not None:
        svc.chat.resolve(body.model)
    changes = body.model_dump(exclude_unset=True)
    if "tools" in changes:
        changes["tools"] = _tools(svc, body.tools or [])
    with svc.db.session() as s:
        return conversation_out(convs.update(s, p.user.id, conv_id, changes))


@router.delete("/conversations/{conv_id}", status_code=204)
def delete_conversation(conv_id: str, p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        s.delete(convs.own_conversation(s, p.user.id, conv_id))
    return Response(status_code=204)


@router.get("/conversations/{conv_id}/export", response_class=Response, responses={200: {
    "description": "The current branch as a file download.",
    "content": {"application/json": {"schema": {"type": "object"}}, "text/markdown": {"schema": {"type": "string"}}}}})
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

    def __init__(self, turn: Turn, continuing: bool = False):
        self.turn, self.continuing = turn, continuing  # continuing: the next answer of a tool chain
        self.parts: list[list[str]] = [[] for _ in turn.answers]
        self.finals: list[Message | None] = [None] * len(turn.answers)
        self.disconnected = False

    def start(self) -> Iterable[str]:
        if self.continuing:
            return [sse({"type": "assistant_start", "assistant_message": message_out(self.turn.answer)})]
        user = None
        if self.turn.user_message:
            user = message_out(self.turn.user_message, attachments=self.turn.context.new_attachments)
        answers = [message_out(a) for a in self.turn.answers]
        event = {"type": "start", "user_message": user, "assistant_message": answers[0]}
        if self.turn.duel:  # two answers side by side, for a vote
            event["assistant_messages"] = answers
        return [sse(event)]

    def delta(self, index: int, text: str, logprobs: list[dict] = ()) -> Iterable[str]:
        self.parts[index].append(text)
        return [sse({"type": "delta", "message_id": self.turn.answers[index].id, "text": text})]

    def finish(self, index: int, result: GenerationResult) -> Iterable[str]:
        return []

    async def end(self, results: list[GenerationResult | None], disconnected: bool) -> Iterable[str]:
        out = []
        self.disconnected = disconnected
        for i, result in enumerate(results):
            self.finals[i] = await self.turn.finish(i, result, "".join(self.parts[i]))
            final = message_out(self.finals[i])
            if result is not None and result.finish_reason == "error":
                out.append(sse({"type": "error", "message": final, "error": result.error}))
            else:
                out.append(sse({"type": "done", "message": final}))
        return [] if disconnected else out


class ToolChain:
    """One HTTP stream of a conversation turn: the answer, and while it calls tools, the calls'
    results and the next answer (serving/tool_loop.py does the work, this encodes it)."""

    def __init__(self, svc: Services, user_id: str, conv_id: str, receive: Receive | None):
        self.svc, self.user_id, self.conv_id, self.receive = svc, user_id, conv_id, receive

    async def stream(self, turn: Turn | None, answer: Message | None = None,
                     approve: bool | None = None) -> AsyncIterator[str]:
        """Drive `turn` (or, with `answer`, continue after the user's decision on its calls)."""
        rounds = 0
        while True:
            if turn is not None:
                sink = TurnSink(turn, continuing=rounds > 0 or answer is not None)
                rounds += 1
                async for chunk in self.svc.chat.drive(turn.run, sink, self.receive):
                    yield chunk
                if sink.disconnected:
                    return
                answer, approve = (None if turn.duel else sink.finals[0]), None
            if answer is None or answer.finish_reason != "tool_calls" or rounds >= self.svc.settings.max_tool_rounds:
                break
            calls = json.loads(answer.tool_calls or "[]")
            if approve is None and needs_approval(self.svc.tools, calls):
                answer = await asyncio.to_thread(self._set_status, answer.id, "awaiting_approval")
                yield sse({"type": "approval", "message": message_out(answer),
                           "calls": [call_out(self.svc.tools, c) for c in calls]})
                break
            parent_id = answer.id
            async for item in self._run_calls(answer, calls, approve):
                if isinstance(item, str):
                    yield item
                else:
                    parent_id = item.id  # the last result: the next answer continues from it
            try:
                last = rounds + 1 >= self.svc.settings.max_tool_rounds  # the last answer calls nothing
                turn = await start_turn(self.svc.chat, self.svc.db, self.user_id, self.conv_id,
                                        TurnOptions(continue_from=parent_id, tool_choice="none" if last else None,
                                                    temperature=0.7 if answer.temperature is None else answer.temperature,
                                                    top_p=0.9 if answer.top_p is None else answer.top_p), toolbox=self.svc.tools)
            except ChatloopError as e:  # e.g. the results left no room in the context: say so, keep what is stored
                yield sse({"type": "error", "message": None, "error": str(e)})
                break
        yield DONE

    async def _run_calls(self, answer: Message, calls: list[dict], approve: bool | None):
        """SSE events of the calls as they run, and each stored result (a Message) after its event."""
        allowed = set(await asyncio.to_thread(self._conversation_tools))
        waiting = {c.get("id") for c in needs_approval(self.svc.tools, calls)}
        parent_id, context = answer.id, CallContext(self.user_id, self.conv_id)
        for call in calls:
            declined = approve is False and call.get("id") in waiting
            yield sse({"type": "tool_start", "message_id": answer.id, "call": call_out(self.svc.tools, call)})
            msg = await run_call(self.svc.tools, self.svc.db, context, parent_id, call, allowed=allowed,
                                 declined=declined)
            parent_id = msg.id
            yield sse({"type": "tool_result", "message": message_out(msg)})
            yield msg

    def _conversation_tools(self) -> list[str]:
        with self.svc.db.session() as s:
            return json.loads(convs.own_conversation(s, self.user_id, self.conv_id).tools or "[]")

    def _set_status(self, message_id: str, status: str) -> Message:
        with self.svc.db.session() as s:
            msg = s.get(Message, message_id)
            msg.status = status
            return msg


@router.post("/conversations/{conv_id}/messages", response_class=EventStreamResponse,
             responses={200: STREAM, **errors_doc(MODEL_404, 503, 504)})
async def send_message(conv_id: str, body: SendMessage, request: Request, p: Principal = Depends(principal),
                       svc: Services = Depends(services)):
    if body.attachments and len(body.attachments) > svc.chat.images.limits.max_images:
        raise APIError(400, f"too many images: at most {svc.chat.images.limits.max_images} per message",
                       param="attachments", code="too_many_images")
    content = "" if body.content is None and body.attachments else body.content  # an image alone is a message
    options = TurnOptions(content=content, attachments=body.attachments, regenerate_from=body.regenerate_from,
                          max_tokens=body.max_tokens,
                          seed=body.seed, compare=body.compare, tool_choice=body.tool_choice,
                          **body.model_dump(include={"parent_id"}, exclude_unset=True),
                          **{k: v for k, v in (("temperature", body.temperature), ("top_p", body.top_p))
                             if v is not None})
    turn = await start_turn(svc.chat, svc.db, p.user.id, conv_id, options, vote_share=svc.settings.vote_share,
                            toolbox=svc.tools)
    return EventStreamResponse(ToolChain(svc, p.user.id, conv_id, request.receive).stream(turn))


@router.post("/messages/{message_id}/approval", response_class=EventStreamResponse,
             responses={200: STREAM, **errors_doc(503)})
async def approve_tools(message_id: str, body: ToolApproval, request: Request, p: Principal = Depends(principal),
                        svc: Services = Depends(services)):
    """Answer an answer's calls that wait for approval: run them (`approve`), or tell the model the
    user declined; the loop then continues as a turn does (the same SSE events)."""
    def claim() -> Message:
        with svc.db.session() as s:
            msg, _ = convs.own_message(s, p.user.id, message_id)
            if msg.role != "assistant" or msg.status != "awaiting_approval":
                raise UsageError("this message has no tool calls waiting for approval", param="message_id",
                                 code="nothing_to_approve")
            msg.status = "complete"  # claimed: a second click finds nothing to approve
            return msg

    answer = await asyncio.to_thread(claim)
    return EventStreamResponse(ToolChain(svc, p.user.id, answer.conversation_id, request.receive)
                               .stream(None, answer, body.approve))
