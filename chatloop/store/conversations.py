"""Conversations as message trees: ownership, branches, and the rows of one chat turn.

A user only ever reaches their own conversations: another user's object raises NotFoundError,
exactly as a missing one does. A turn (a new question, an edit, a regeneration) is read in one
short transaction (`read_turn`), rendered and planned with no transaction open, then written in
another (`commit_turn`): the user message and an assistant message in status `streaming`, which
`finish_answer` completes (`complete`, `stopped`, `error`). Each answer records what the model saw
besides the branch: the system prompt, the custom instructions and the turns left out.

With tools, a turn is a chain: an answer that calls tools (`tool_calls`; status
`awaiting_approval` while the user has not yet allowed a call), one `tool` message per call (its
result, `add_tool_result`), and the next answer, which continues from the last result
(`read_turn(continue_from=...)`). The model sees an answer's calls only together with their results.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from chatloop.errors import NotFoundError, UsageError
from chatloop.store import attachments
from chatloop.store.models import Attachment, Comparison, Conversation, Feedback, Message, User

TITLE_CHARS = 60
UNSET = object()  # "parent_id not given": the branch being shown continues


def own_conversation(s: Session, user_id: str, conv_id: str) -> Conversation:
    conv = s.get(Conversation, conv_id)
    if conv is None or conv.user_id != user_id:
        raise NotFoundError("conversation not found")  # another user's is indistinguishable from none
    return conv


def own_message(s: Session, user_id: str, message_id: str) -> tuple[Message, Conversation]:
    msg = s.get(Message, message_id)
    conv = s.get(Conversation, msg.conversation_id) if msg is not None else None
    if conv is None or conv.user_id != user_id:
        raise NotFoundError("message not found")
    return msg, conv


def branch(messages: dict[str, Message], leaf_id: str | None) -> list[Message]:
    """The path from the root to `leaf_id` (the branch the user sees)."""
    path = []
    while leaf_id is not None and leaf_id in messages:
        path.append(messages[leaf_id])
        leaf_id = messages[leaf_id].parent_id
    return path[::-1]


def effective_system(system_prompt: str, custom_instructions: str) -> str:
    """The system message a conversation's model sees: its own prompt, else the user's custom
    instructions ("" = the chat template's default)."""
    return system_prompt or custom_instructions


def title_from(text: str) -> str:
    words = " ".join(text.split())
    return words if len(words) <= TITLE_CHARS else words[: TITLE_CHARS - 1].rsplit(" ", 1)[0] + "…"


def search(s: Session, user_id: str, q: str | None, archived: bool, limit: int = 500) -> list[Conversation]:
    stmt = select(Conversation).where(Conversation.user_id == user_id, Conversation.archived == archived)
    if q:
        needle = q.lower()
        in_messages = exists().where(Message.conversation_id == Conversation.id,
                                     func.lower(Message.content).contains(needle, autoescape=True))
        stmt = stmt.where(func.lower(Conversation.title).contains(needle, autoescape=True) | in_messages)
    return list(s.scalars(stmt.order_by(Conversation.updated_at.desc()).limit(limit)))


def messages_with_feedback(s: Session, user_id: str,
                           conv: Conversation) -> list[tuple[Message, Feedback | None, bool]]:
    """Every message of a conversation with my feedback on it and whether its side-by-side pair
    (if it is one of two answers shown for a vote) has been voted on."""
    msgs = list(s.scalars(select(Message).where(Message.conversation_id == conv.id).order_by(Message.created_at)))
    fb = {f.message_id: f for f in s.scalars(select(Feedback).where(
        Feedback.user_id == user_id, Feedback.message_id.in_([m.id for m in msgs])))}
    voted = voted_duels(s, conv.id)
    return [(m, fb.get(m.id), m.duel_id in voted) for m in msgs]


def voted_duels(s: Session, conv_id: str) -> set[str]:
    """The duel ids of a conversation's side-by-side answers that have a vote."""
    chosen = select(Message.duel_id).join(Comparison, Comparison.chosen_message_id == Message.id).where(
        Comparison.conversation_id == conv_id, Comparison.kind == "vote")
    return set(s.scalars(chosen))


def current_branch(s: Session, conv: Conversation) -> list[Message]:
    msgs = {m.id: m for m in s.scalars(select(Message).where(Message.conversation_id == conv.id))}
    return branch(msgs, conv.current_leaf_id)


def update(s: Session, user_id: str, conv_id: str, changes: dict) -> Conversation:
    conv = own_conversation(s, user_id, conv_id)
    if changes.get("current_leaf_id"):
        leaf = s.get(Message, changes["current_leaf_id"])
        if leaf is None or leaf.conversation_id != conv.id:
            raise UsageError("current_leaf_id is not a message of this conversation", param="current_leaf_id")
    for field, value in changes.items():
        if value is not None or field == "current_leaf_id":
            setattr(conv, field, value)
    conv.updated_at = datetime.now(UTC)
    return conv


# --- one chat turn ----------------------------------------------------------------------------------

@dataclass
class TurnContext:
    """What a turn needs, read in one short transaction."""

    conversation_id: str
    model: str
    parent_id: str | None  # the message the answer (or the new user message) hangs under
    new_user_content: str | None  # None when regenerating
    history: list[dict]  # the branch up to the parent, as chat messages (system not included)
    system_prompt: str
    custom_instructions: str
    needs_title: bool
    channel: str | None  # the release channel the conversation was assigned (None: not yet)
    is_new: bool  # no message yet: a release channel may still be assigned
    new_attachments: list[Attachment]  # images sent with the new message
    tools: list[str] = ()  # the tools the conversation offers the model

    @property
    def messages(self) -> list[dict]:
        """The chat messages; a user message with images carries them (rows, bytes loaded) under
        "attachments", for the chat service to turn into image parts."""
        system = effective_system(self.system_prompt, self.custom_instructions)
        new = []
        if self.new_user_content is not None:
            new = [{"role": "user", "content": self.new_user_content,
                    **({"attachments": self.new_attachments} if self.new_attachments else {})}]
        return ([{"role": "system", "content": system}] if system else []) + self.history + new


def history_message(m: Message, answered: set[str]) -> dict:
    """A stored message as the model reads it: an answer keeps the calls whose results follow it."""
    out = {"role": m.role, "content": m.content}
    if m.role == "assistant" and m.tool_calls:
        calls = [c for c in json.loads(m.tool_calls) if c.get("id") in answered]
        if calls:
            out["tool_calls"] = calls
    elif m.role == "tool":
        out["tool_call_id"] = m.tool_call_id
    return out


def read_turn(s: Session, user_id: str, conv_id: str, content: str | None, regenerate_from: str | None,
              parent_id=UNSET, attachment_ids: list[str] | None = None,
              continue_from: str | None = None) -> TurnContext:
    """What a turn needs: a new user message (`content`), another answer to a user message
    (`regenerate_from`), or the next answer after tool results (`continue_from`: a tool message)."""
    if continue_from is None and (content is None) == (regenerate_from is None):
        raise UsageError("send either 'content' (a new message) or 'regenerate_from' (a user message id)",
                         param="content")
    conv = own_conversation(s, user_id, conv_id)
    msgs = {m.id: m for m in s.scalars(select(Message).where(Message.conversation_id == conv.id))}
    if continue_from is not None:
        if continue_from not in msgs or msgs[continue_from].role != "tool":
            raise UsageError("an answer continues from a tool result of this conversation", param="parent_id")
        parent_id = continue_from
    elif regenerate_from is not None:
        parent = msgs.get(regenerate_from)
        if parent is None or parent.role != "user":
            raise UsageError("regenerate_from must be a user message of this conversation", param="regenerate_from")
        parent_id = parent.id
    else:
        parent_id = conv.current_leaf_id if parent_id is UNSET else parent_id
        if parent_id is not None and parent_id not in msgs:
            raise UsageError("parent_id is not a message of this conversation", param="parent_id")
    if attachment_ids and content is None:
        raise UsageError("images are sent with a new message, not a regeneration", param="attachments")
    new_attachments = attachments.unsent(s, user_id, attachment_ids or [])
    path = [m for m in branch(msgs, parent_id) if m.role in ("user", "tool") or m.content or m.tool_calls]
    answered = {m.tool_call_id for m in path if m.role == "tool"}
    # an answer whose calls never ran (the user did not allow them) says only what it wrote
    path = [m for m in path if m.role != "assistant" or m.content or answered.intersection(
        c.get("id") for c in json.loads(m.tool_calls or "[]"))]
    images = attachments.of_messages(s, [m.id for m in path if m.role == "user"], with_data=True)
    history = [{**history_message(m, answered), **({"attachments": images[m.id]} if m.id in images else {})}
               for m in path]
    owner = s.get(User, user_id)
    return TurnContext(conv.id, conv.model, parent_id, content, history, conv.system_prompt,
                       owner.custom_instructions, not conv.title, conv.channel, not msgs, new_attachments,
                       json.loads(conv.tools or "[]"))


def commit_turn(s: Session, user_id: str, ctx: TurnContext, answers: list[dict],
                channel: str | None = None) -> tuple[Message | None, list[Message]]:
    """Write the turn's user message (unless regenerating) and its `streaming` answers (one, or two
    side by side); each of `answers` holds an answer's columns (model version, sampling
    parameters, context_dropped, duel_id). `channel`: the release channel the conversation was
    assigned, kept for its later turns."""
    conv = own_conversation(s, user_id, ctx.conversation_id)
    if channel is not None and conv.channel is None:
        conv.channel = channel
    parent_id = ctx.parent_id
    if parent_id is not None and s.get(Message, parent_id) is None:
        raise UsageError("the message this turn continues was deleted meanwhile", param="parent_id")
    user_msg = None
    if ctx.new_user_content is not None:
        user_msg = Message(conversation_id=conv.id, parent_id=parent_id, role="user", content=ctx.new_user_content)
        s.add(user_msg)
        s.flush()  # assigns its id
        attachments.attach(s, user_id, [a.id for a in ctx.new_attachments], user_msg.id)
        parent_id = user_msg.id
    written = []
    for fields in answers:
        assistant = Message(conversation_id=conv.id, parent_id=parent_id, role="assistant", content="",
                            status="streaming", system_prompt=ctx.system_prompt,
                            custom_instructions=ctx.custom_instructions, **fields)
        s.add(assistant)
        s.flush()
        written.append(assistant)
    conv.current_leaf_id = written[0].id
    conv.updated_at = datetime.now(UTC)
    return user_msg, written


def add_tool_result(s: Session, conv_id: str, parent_id: str, call_id: str, content: str, result: dict) -> Message:
    """One call's result as a `tool` message under `parent_id` (the answer that made the call, or the
    previous result of the same answer); the conversation now shows it."""
    conv = s.get(Conversation, conv_id)
    if s.get(Message, parent_id) is None or conv is None:
        raise UsageError("the answer these tool calls belong to was deleted meanwhile", param="parent_id")
    msg = Message(conversation_id=conv_id, parent_id=parent_id, role="tool", content=content, status="complete",
                  tool_call_id=call_id, tool_result=json.dumps(result, ensure_ascii=False))
    s.add(msg)
    s.flush()
    conv.current_leaf_id = msg.id
    conv.updated_at = datetime.now(UTC)
    return msg


def record_outcome(msg: Message, *, text: str, status: str, finish_reason: str, usage: dict | None = None,
                   error: str | None = None, tool_calls: list[dict] | None = None) -> Message:
    """Set an answer's outcome on the object (what `finish_answer` stores)."""
    msg.content, msg.status, msg.finish_reason, msg.error = text, status, finish_reason, error
    msg.tool_calls = json.dumps(tool_calls, ensure_ascii=False) if tool_calls else None
    for field, value in (usage or {}).items():
        setattr(msg, field, value)
    return msg


def finish_answer(s: Session, message_id: str, *, text: str, status: str, finish_reason: str,
                  usage: dict | None = None, error: str | None = None, tool_calls: list[dict] | None = None,
                  title: bool = False) -> Message:
    """Finalise an answer; `usage` carries prompt/completion tokens, ttft_ms and latency_ms."""
    msg = s.get(Message, message_id)
    record_outcome(msg, text=text, status=status, finish_reason=finish_reason, usage=usage, error=error,
                   tool_calls=tool_calls)
    conv = s.get(Conversation, msg.conversation_id)
    if title and conv is not None and not conv.title:
        first = s.get(Message, msg.parent_id) if msg.parent_id else None
        conv.title = title_from((first.content if first else "") or text)  # an image alone: the answer
    return msg
