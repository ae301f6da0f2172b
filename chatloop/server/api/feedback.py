"""Feedback capture: thumbs with reasons, better/worse comparisons, corrected answers.

Each row records the model version that produced the answer, so the flywheel can attribute it.
"""

from fastapi import APIRouter, Depends
from sqlalchemy import select

from chatloop.server.auth import Principal
from chatloop.server.deps import Services, principal, services
from chatloop.server.errors import APIError
from chatloop.server.api.conversations import own_message
from chatloop.server.api.schemas import ComparisonIn, CorrectionIn, FeedbackIn, feedback_out
from chatloop.store.models import Comparison, Correction, Feedback

router = APIRouter(prefix="/api", tags=["feedback"])


def _own_answer(s, p: Principal, message_id: str, param: str = "message_id"):
    msg, conv = own_message(s, p, message_id)
    if msg.role != "assistant":
        raise APIError(400, "feedback applies to assistant messages only", param=param)
    return msg, conv


@router.post("/messages/{message_id}/feedback")
def give_feedback(message_id: str, body: FeedbackIn, p: Principal = Depends(principal),
                  svc: Services = Depends(services)):
    with svc.db.session() as s:
        msg, _ = _own_answer(s, p, message_id)
        row = s.scalar(select(Feedback).where(Feedback.message_id == msg.id, Feedback.user_id == p.user.id))
        if row is None:
            row = Feedback(message_id=msg.id, user_id=p.user.id)
            s.add(row)
        row.rating = 1 if body.rating == "up" else -1
        row.reasons = ",".join(body.reasons)
        row.comment = body.comment
        row.model_version = msg.model_version
        return {"message_id": msg.id, **feedback_out(row)}


@router.post("/comparisons", status_code=201)
def compare(body: ComparisonIn, p: Principal = Depends(principal), svc: Services = Depends(services)):
    if body.chosen_message_id == body.rejected_message_id:
        raise APIError(400, "chosen and rejected must be different answers", param="rejected_message_id")
    with svc.db.session() as s:
        chosen, conv = _own_answer(s, p, body.chosen_message_id, "chosen_message_id")
        rejected, _ = _own_answer(s, p, body.rejected_message_id, "rejected_message_id")
        if chosen.parent_id != rejected.parent_id:
            raise APIError(400, "the two answers must reply to the same message", param="rejected_message_id")
        row = Comparison(user_id=p.user.id, conversation_id=conv.id, chosen_message_id=chosen.id,
                         rejected_message_id=rejected.id, chosen_model_version=chosen.model_version,
                         rejected_model_version=rejected.model_version)
        s.add(row)
        return {"id": row.id, "chosen_message_id": chosen.id, "rejected_message_id": rejected.id}


@router.post("/messages/{message_id}/correction", status_code=201)
def correct(message_id: str, body: CorrectionIn, p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        msg, _ = _own_answer(s, p, message_id)
        row = Correction(user_id=p.user.id, message_id=msg.id, content=body.content, model_version=msg.model_version)
        s.add(row)
        return {"id": row.id, "message_id": msg.id, "content": row.content}
