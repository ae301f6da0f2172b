"""Image attachments: a user's uploads, then the user message each was sent with.

An upload belongs to the user who sent it; another user's answers NotFoundError, exactly as a
missing one does. It is attached (`message_id`) when a message is sent with it, once: an image is
part of one message. Deleting the message (with its conversation) deletes its images through the
foreign key; deleting all of a user's data deletes their uploads too (accounts.delete_user_data).
The bytes live in the database (so a backup holds them), and are read only when asked for.
"""

from sqlalchemy import select, update
from sqlalchemy.orm import Session, defer

from chatloop.errors import NotFoundError, UsageError
from chatloop.store.models import Attachment


def add_upload(s: Session, user_id: str, *, data: bytes, mime: str, sha256: str, width: int,
               height: int) -> Attachment:
    att = Attachment(user_id=user_id, data=data, mime=mime, size_bytes=len(data), sha256=sha256, width=width,
                     height=height)
    s.add(att)
    s.flush()
    return att


def own_upload(s: Session, user_id: str, upload_id: str) -> Attachment:
    att = s.get(Attachment, upload_id)
    if att is None or att.user_id != user_id:
        raise NotFoundError("upload not found")
    return att


def unsent(s: Session, user_id: str, ids: list[str], param: str = "attachments") -> list[Attachment]:
    """The user's uploads `ids`, in that order, none yet sent with a message (bytes loaded)."""
    if len(set(ids)) != len(ids):
        raise UsageError("an upload is listed twice", param=param)
    found = {a.id: a for a in s.scalars(select(Attachment).where(Attachment.id.in_(ids)))}
    out = []
    for i in ids:
        att = found.get(i)
        if att is None or att.user_id != user_id:
            raise NotFoundError(f"upload {i} not found", param=param)
        if att.message_id is not None:
            raise UsageError(f"upload {i} was already sent with a message; upload the image again",
                             param=param)
        out.append(att)
    return out


def attach(s: Session, user_id: str, ids: list[str], message_id: str) -> None:
    """Attach the uploads `ids` to `message_id`; UsageError if one was sent meanwhile."""
    if not ids:
        return
    done = s.execute(update(Attachment).where(Attachment.id.in_(ids), Attachment.user_id == user_id,
                                              Attachment.message_id.is_(None)).values(message_id=message_id))
    if done.rowcount != len(ids):
        raise UsageError("an upload was sent with another message meanwhile; upload the image again",
                         param="attachments")


def of_messages(s: Session, message_ids: list[str], with_data: bool = False) -> dict[str, list[Attachment]]:
    """The attachments of each message (upload order); bytes only `with_data`."""
    stmt = select(Attachment).where(Attachment.message_id.in_(message_ids)).order_by(Attachment.created_at,
                                                                                    Attachment.id)
    if not with_data:
        stmt = stmt.options(defer(Attachment.data))
    out: dict[str, list[Attachment]] = {}
    for att in s.scalars(stmt):
        out.setdefault(att.message_id, []).append(att)
    return out
