"""Feedback that may train the next model: only from users who allow it.

"Improve the model for everyone" (`User.train_opt_in`) is honoured here, in the one query the
feedback export builds on: a user who opts out contributes nothing, whenever their feedback was
given. Each row comes with the answer it is about (which records the model version and what the
model saw).
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from chatloop.store.models import Comparison, Correction, Feedback, Message, User


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
