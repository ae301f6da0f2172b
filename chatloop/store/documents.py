"""Documents for retrieval: a user's uploaded files, their chunks and the chunks' embeddings.

A document belongs to the user who uploaded it; another user's answers NotFoundError, exactly as a
missing one does. It is in one conversation's scope (`conversation_id`) or, with None, in the
user's library; a conversation searches its own documents and the library (`candidates`).
Deleting the conversation, the document or the user deletes the chunks through foreign keys.
Extraction, chunking and embedding live in tools/retrieval.py; this module only stores and reads.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, defer

from chatloop.errors import NotFoundError
from chatloop.store.models import Conversation, Document, DocumentChunk


@dataclass(frozen=True)
class NewChunk:
    index: int
    text: str
    start_char: int
    end_char: int
    embedding: bytes  # float32, unit length


def check_conversation(s: Session, user_id: str, conversation_id: str | None) -> None:
    """NotFoundError unless `conversation_id` is None or one of the user's conversations."""
    if conversation_id is None:
        return
    conv = s.get(Conversation, conversation_id)
    if conv is None or conv.user_id != user_id:
        raise NotFoundError("conversation not found", param="conversation_id")


def add_document(s: Session, user_id: str, *, conversation_id: str | None, filename: str, mime: str,
                 size_bytes: int, sha256: str, text: str, chunks: Sequence[NewChunk]) -> Document:
    check_conversation(s, user_id, conversation_id)
    doc = Document(user_id=user_id, conversation_id=conversation_id, filename=filename, mime=mime,
                   size_bytes=size_bytes, sha256=sha256, text=text)
    s.add(doc)
    s.flush()
    s.add_all(DocumentChunk(document_id=doc.id, index=c.index, text=c.text, start_char=c.start_char,
                            end_char=c.end_char, embedding=c.embedding) for c in chunks)
    s.flush()
    return doc


def same_upload(s: Session, user_id: str, conversation_id: str | None, sha256: str) -> Document | None:
    """The user's document with these bytes in this scope, if they uploaded it already."""
    where = (Document.conversation_id.is_(None) if conversation_id is None
             else Document.conversation_id == conversation_id)
    return s.scalar(select(Document).where(Document.user_id == user_id, Document.sha256 == sha256, where)
                    .options(defer(Document.text)).limit(1))


def chunk_count(s: Session, document_id: str) -> int:
    return s.scalar(select(func.count()).select_from(DocumentChunk)
                    .where(DocumentChunk.document_id == document_id))


def own_document(s: Session, user_id: str, document_id: str) -> Document:
    doc = s.get(Document, document_id)
    if doc is None or doc.user_id != user_id:
        raise NotFoundError("document not found")
    return doc


def list_documents(s: Session, user_id: str,
                   conversation_id: str | None = None) -> list[tuple[Document, int]]:
    """The user's documents, newest first, each with its chunk count; only the conversation's
    documents when `conversation_id` is given."""
    counts = (select(DocumentChunk.document_id, func.count().label("n")).group_by(DocumentChunk.document_id)
              .subquery())
    stmt = (select(Document, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.document_id == Document.id).where(Document.user_id == user_id)
            .options(defer(Document.text)).order_by(Document.created_at.desc(), Document.id))
    if conversation_id is not None:
        stmt = stmt.where(Document.conversation_id == conversation_id)
    return [(doc, n) for doc, n in s.execute(stmt)]


def delete_document(s: Session, user_id: str, document_id: str) -> None:
    s.delete(own_document(s, user_id, document_id))


def scope(user_id: str, conversation_id: str | None):
    """The documents a search for this user in this conversation sees: the conversation's and the library."""
    where = Document.conversation_id.is_(None)
    if conversation_id is not None:
        where = or_(where, Document.conversation_id == conversation_id)
    return (Document.user_id == user_id) & where


def candidates(s: Session, user_id: str, conversation_id: str | None) -> list[tuple[str, bytes]]:
    """(chunk id, embedding) of every chunk a search may return."""
    stmt = (select(DocumentChunk.id, DocumentChunk.embedding)
            .join(Document, Document.id == DocumentChunk.document_id).where(scope(user_id, conversation_id))
            .order_by(DocumentChunk.id))
    return [(cid, emb) for cid, emb in s.execute(stmt)]


def chunks_by_id(s: Session, user_id: str, ids: Sequence[str]) -> dict[str, tuple[DocumentChunk, Document]]:
    """The user's chunks `ids` with their documents (text loaded, embeddings not)."""
    stmt = (select(DocumentChunk, Document).join(Document, Document.id == DocumentChunk.document_id)
            .where(DocumentChunk.id.in_(list(ids)), Document.user_id == user_id)
            .options(defer(DocumentChunk.embedding), defer(Document.text)))
    return {chunk.id: (chunk, doc) for chunk, doc in s.execute(stmt)}
