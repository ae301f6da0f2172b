"""Documents for retrieval (the app API): a user uploads files, the model searches them with the
`search_documents` tool (tools/retrieval.py) and cites what it found.

    curl -X POST /api/documents -F file=@notes.md [-F conversation_id=ID]   # 201 {"id", "chunks", ...}
    GET    /api/documents[?conversation_id=ID]     # the caller's documents (only that conversation's)
    DELETE /api/documents/{id}                     # 204

A document with a `conversation_id` is searched in that conversation only; one without is in the
user's library, searched in all of them. Accepted: plain text, Markdown, CSV, JSON, HTML, and PDF
where `pypdf` is installed (415 otherwise), at most MAX_DOCUMENT_BYTES (413); binary, non-UTF-8
and empty files get 400. The same bytes uploaded again to the same place answer 200 with the
stored document. Another user's document or conversation answers 404.
"""

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile
from fastapi.responses import JSONResponse

from chatloop.server.api.responses import DocumentOut
from chatloop.server.auth import Principal
from chatloop.server.deps import Services, principal, services
from chatloop.server.routing import JSONRoute, errors_doc
from chatloop.store import documents
from chatloop.store.models import Document
from chatloop.tools import retrieval

router = APIRouter(prefix="/api", tags=["documents"], route_class=JSONRoute)


def document_out(doc: Document, chunks: int) -> dict:
    return {"id": doc.id, "filename": doc.filename, "mime": doc.mime, "bytes": doc.size_bytes,
            "sha256": doc.sha256, "conversation_id": doc.conversation_id, "chunks": chunks,
            "created_at": doc.created_at.isoformat()}


@router.post("/documents", status_code=201, response_model=DocumentOut, responses={
    200: {"model": DocumentOut, "description": "The same bytes were stored here already: the stored document."},
    **errors_doc((404, "No such conversation; another user's answers the same."),
                 (415, "Not a text, Markdown, CSV, JSON, HTML or (with pypdf) PDF file."))})
async def upload_document(file: UploadFile = File(description="Text, Markdown, CSV, JSON, HTML or PDF."),
                          conversation_id: str | None = Form(default=None, max_length=32),
                          p: Principal = Depends(principal), svc: Services = Depends(services)):
    data = await file.read(retrieval.MAX_DOCUMENT_BYTES + 1)  # one byte more tells an oversized file
    doc, chunks, new = await retrieval.ingest(svc.db, p.user.id, data, file.filename or "",
                                              file.content_type or "", conversation_id or None)
    return document_out(doc, chunks) if new else JSONResponse(document_out(doc, chunks), status_code=200)


@router.get("/documents", response_model=list[DocumentOut],
            responses=errors_doc((404, "No such conversation; another user's answers the same.")))
def list_documents(conversation_id: str | None = Query(default=None, max_length=32),
                   p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        documents.check_conversation(s, p.user.id, conversation_id)
        return [document_out(doc, n) for doc, n in documents.list_documents(s, p.user.id, conversation_id)]


@router.delete("/documents/{document_id}", status_code=204)
def delete_document(document_id: str, p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        documents.delete_document(s, p.user.id, document_id)
    return Response(status_code=204)
