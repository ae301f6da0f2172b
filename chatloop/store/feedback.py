"""Feedback on answers: thumbs with reasons, better/worse comparisons, corrected answers.

Each row records the model version that produced the answer, so the flywheel can attribute it.
Only assistant messages of one's own conversations take feedback (others raise NotFoundError).
"""

from sqlalchemy import select
from sqlalchemy.orm import Session

from chatloop.errors import ConflictError, UsageError
from chatloop.store.conversations import own_message, voted_duels
from chatloop.store.models import Comparison, Conversation, Correction, Feedback, Message


def own_answer(s: Session, user_id: str, message_id: str, param: str = "message_id") -> Message:
    msg, _ = own_message(s, user_id, message_id)
    if msg.role != "assistant":
        raise UsageError("feedback applies to assistant messages only", param=param)
    return msg


def rate(s: Session, user_id: str, message_id: str, rating: int, reasons: list[str], comment: str) -> Feedback:
    """Thumbs up (+1) or down (-1); one per user and answer, replaced when given again."""
    msg = own_answer(s, user_id, message_id)
    row = s.scalar(select(Feedback).where(Feedback.message_id == msg.id, Feedback.user_id == user_id))
    if row is None:
        row = Feedback(message_id=msg.id, user_id=user_id)
        s.add(row)
    row.rating, row.reasons, row.comment, row.model_version = rating, ",".join(reasons), comment, msg.model_version
    return row


def compare(s: Session, user_id: str, chosen_id: str, rejected_id: str) -> Comparison:
    """"This answer is better than that one": two answers to the same message. When the two are the
    side-by-side answers of a vote (same duel id) it is a `vote` (one per pair), and the chosen
    answer becomes the branch the conversation continues from."""
    if chosen_id == rejected_id:
        raise UsageError("chosen and rejected must be different answers", param="rejected_message_id")
    chosen = own_answer(s, user_id, chosen_id, "chosen_message_id")
    rejected = own_answer(s, user_id, rejected_id, "rejected_message_id")
    if chosen.parent_id != rejected.parent_id:
        raise UsageError("the two answers must reply to the same message", param="rejected_message_id")
    vote = chosen.duel_id is not None and chosen.duel_id == rejected.duel_id
    if vote and chosen.duel_id in voted_duels(s, chosen.conversation_id):
        raise ConflictError("these two answers have been voted on already", code="already_voted")
    row = Comparison(user_id=user_id, conversation_id=chosen.conversation_id, chosen_message_id=chosen.id,
                     rejected_message_id=rejected.id, chosen_model_version=chosen.model_version,
                     rejected_model_version=rejected.model_version, kind="vote" if vote else "regenerate")
    s.add(row)
    if vote:
        s.get(Conversation, chosen.conversation_id).current_leaf_id = chosen.id
    s.flush()
    return row


def correct(s: Session, user_id: str, message_id: str, content: str) -> Correction:
    """An edited answer, stored beside the original (which stays unchanged)."""
    msg = own_answer(s, user_id, message_id)
    row = Correction(user_id=user_id, message_id=msg.id, content=content, model_version=msg.model_version)
    s.add(row)
    s.flush()
    return row
