"""Feedback capture (thin routes over store/feedback.py): thumbs with reasons, better/worse
comparisons, corrected answers — each recording the model version that answered."""

from fastapi import APIRouter, Depends

from chatloop.server.api.responses import ComparisonOut, CorrectionOut, GivenFeedback
from chatloop.server.api.schemas import ComparisonIn, CorrectionIn, FeedbackIn, feedback_out
from chatloop.server.auth import Principal
from chatloop.server.deps import Services, principal, services
from chatloop.server.routing import JSONRoute, errors_doc
from chatloop.store import feedback

router = APIRouter(prefix="/api", tags=["feedback"], route_class=JSONRoute)


@router.post("/messages/{message_id}/feedback", response_model=GivenFeedback)
def give_feedback(message_id: str, body: FeedbackIn, p: Principal = Depends(principal),
                  svc: Services = Depends(services)):
    with svc.db.session() as s:
        row = feedback.rate(s, p.user.id, message_id, 1 if body.rating == "up" else -1, body.reasons, body.comment)
        return {"message_id": row.message_id, **feedback_out(row)}


@router.post("/comparisons", status_code=201, response_model=ComparisonOut, responses=errors_doc(
    (404, "No such answer; another user's answers the same."), (409, "These two answers have been voted on already.")))
def compare(body: ComparisonIn, p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        row = feedback.compare(s, p.user.id, body.chosen_message_id, body.rejected_message_id)
        return {"id": row.id, "chosen_message_id": row.chosen_message_id, "rejected_message_id": row.rejected_message_id}


@router.post("/messages/{message_id}/correction", status_code=201, response_model=CorrectionOut)
def correct(message_id: str, body: CorrectionIn, p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        row = feedback.correct(s, p.user.id, message_id, body.content)
        return {"id": row.id, "message_id": row.message_id, "content": row.content}
