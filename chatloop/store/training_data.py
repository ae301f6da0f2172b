"""Feedback that may train the next model: only from users who allow it.

"Improve the model for everyone" (`User.train_opt_in`) is honoured here, in the one query the
feedback export builds on: a user who opts out contributes nothing, whenever their feedback was
given. Each row comes with the answer it is about (which records the model version and what the
model saw). Beside it: `withheld_feedback` counts (never reads) the feedback of users who opted
out, and `consenting_conversations` reads the branches of conversations whose owner allows
training, for rebuilding the prompts of exported answers.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from chatloop.store.models import Comparison, Conversation, Correction, Feedback, Message, User


@dataclass
class TrainingFeedback:
    ratings: list[tuple[Feedback, Message]]  # thumbs up/down and the answer
    comparisons: list[tuple[Comparison, Message, Message]]  # (row, chosen answer, rejected answer)
    corrections: list[tuple[Correction, Message]]  # the edited text and the original answer


def _consenting():
    return select(User.id).where(User.train_opt_in.is_(True))


def training_feedback(s: Session, since: datetime | None = None) -> TrainingFeedback:
    """All feedback of consenting users (given at or after `since`), oldest first."""
    def window(stmt, created):
        return stmt.where(created >= since) if since is not None else stmt

    ratings = window(select(Feedback, Message).join(Message, Message.id == Feedback.message_id)
                     .where(Feedback.user_id.in_(_consenting())), Feedback.created_at)
    chosen, rejected = aliased(Message), aliased(Message)
    pairs = window(select(Comparison, chosen, rejected)
                   .join(chosen, chosen.id == Comparison.chosen_message_id)
                   .join(rejected, rejected.id == Comparison.rejected_message_id)
                   .where(Comparison.user_id.in_(_consenting())), Comparison.created_at)
    edits = window(select(Correction, Message).join(Message, Message.id == Correction.message_id)
                   .where(Correction.user_id.in_(_consenting())), Correction.created_at)
    return TrainingFeedback(
        ratings=[tuple(r) for r in s.execute(ratings.order_by(Feedback.created_at))],
        comparisons=[tuple(r) for r in s.execute(pairs.order_by(Comparison.created_at))],
        corrections=[tuple(r) for r in s.execute(edits.order_by(Correction.created_at))],
    )


def withheld_feedback(s: Session, since: datetime | None = None,
                      until: datetime | None = None) -> dict[str, int]:
    """How much feedback of users who opted out was given in [since, until): counted so an export
    can report it, never read."""
    def count(model, *conditions) -> int:
        stmt = select(func.count()).select_from(model).where(model.user_id.not_in(_consenting()), *conditions)
        if since is not None:
            stmt = stmt.where(model.created_at >= since)
        if until is not None:
            stmt = stmt.where(model.created_at < until)
        return s.scalar(stmt) or 0

    return {"thumbs_up": count(Feedback, Feedback.rating > 0),
            "thumbs_down": count(Feedback, Feedback.rating <= 0),
            "comparisons": count(Comparison), "corrections": count(Correction)}


def consenting_conversations(s: Session, conversation_ids: Iterable[str]) -> dict[str, dict[str, Message]]:
    """{conversation id: {message id: message}} for those of `conversation_ids` whose owner allows
    training (the prompt of an exported answer comes from here, so an owner who opted out is never
    read even when somebody else's feedback points at the conversation)."""
    ids = sorted(set(conversation_ids))
    out: dict[str, dict[str, Message]] = {}
    for start in range(0, len(ids), 500):  # SQLite caps the parameters of one statement
        chunk = ids[start:start + 500]
        owned = select(Conversation.id).where(Conversation.id.in_(chunk),
                                              Conversation.user_id.in_(_consenting()))
        for msg in s.scalars(select(Message).where(Message.conversation_id.in_(owned))):
            out.setdefault(msg.conversation_id, {})[msg.id] = msg
    return out
