"""Image uploads (the app API): `POST /api/uploads` stores an image, a message sends it by id.

    curl -X POST /api/uploads -H 'Content-Type: image/png' --data-binary @invoice.png   # -> {"id": ...}
    POST /api/conversations/{id}/messages {"content": "What is the total?", "attachments": ["ID"]}
    GET  /api/uploads/{id}                                                      # the image, to its owner

The body is the image itself (PNG, JPEG, WebP or GIF; its Content-Type says which): 415 for another
type, 413 past `max_image_bytes` or `max_image_pixels`, 400 for bytes that do not decode. The image
is validated by serving/images.py, the same checks a /v1 image part gets, and (for a text-only
default model) OCR starts reading it at once. Another user's upload answers 404.
"""

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from chatloop.errors import UnsupportedMediaError
from chatloop.server.api.responses import AttachmentOut
from chatloop.server.api.schemas import attachment_out
from chatloop.server.auth import Principal
from chatloop.server.deps import Services, principal, services
from chatloop.server.routing import JSONRoute, errors_doc
from chatloop.serving.images import MIMES, decode_image
from chatloop.store import attachments

router = APIRouter(prefix="/api", tags=["uploads"], route_class=JSONRoute)
ACCEPTED = set(MIMES.values()) | {"image/jpg"}
BODY = {"requestBody": {"required": True, "content": {m: {"schema": {"type": "string", "format": "binary"}}
                                                      for m in sorted(MIMES.values())}}}


@router.post("/uploads", status_code=201, openapi_extra=BODY, response_model=AttachmentOut, responses=errors_doc(
    (400, "The bytes do not decode as an image of their type."),
    (413, "Over the image size limits (bytes or pixels)."), (415, "Not a PNG, JPEG, WebP or GIF image.")))
async def upload(request: Request, p: Principal = Depends(principal), svc: Services = Depends(services)):
    mime = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if mime not in ACCEPTED:
        raise UnsupportedMediaError(f"uploads are images (PNG, JPEG, WebP or GIF), sent as the request body "
                                    f"with their Content-Type; got {mime or 'no Content-Type'}",
                                    param="content-type")
    data = await request.body()
    image = await run_in_threadpool(decode_image, data, svc.chat.images.limits, "upload")

    def write():
        with svc.db.session() as s:
            return attachments.add_upload(s, p.user.id, data=image.data, mime=image.mime, sha256=image.sha256,
                                          width=image.width, height=image.height)

    stored = await run_in_threadpool(write)
    svc.chat.read_ahead(image)  # the user is still typing the question: read the image's text meanwhile
    return attachment_out(stored)


@router.get("/uploads/{upload_id}", response_class=Response,
            responses={200: {"content": {m: {} for m in sorted(MIMES.values())}}})
def get_upload(upload_id: str, p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        att = attachments.own_upload(s, p.user.id, upload_id)
        # An image only, never sniffed as anything else; private to its owner's browser.
        return Response(att.data, media_type=att.mime, headers={
            "Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'"})
