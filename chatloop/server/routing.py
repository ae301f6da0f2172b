"""The route class every router uses, and the OpenAPI schema the server publishes at `/openapi.json`.

    router = APIRouter(prefix="/api", tags=["..."], route_class=JSONRoute)
    @router.post("/things/{thing_id}", responses=errors_doc(409))   # the errors only this route has
    app.openapi = lambda: openapi_schema(app)

**Bodies.** A JSON body is parsed once, here, by pydantic-core's parser, which refuses what
Python's `json` module lets through: a lone surrogate escape (`"\\ud800"` decodes to a str that no
encoder accepts, so it used to fail far away — in the tokenizer, the database driver, an error
message that echoed it — as a 500), `NaN`/`Infinity` (not JSON), invalid UTF-8 and nesting deeper
than 200 levels. Each is a 400 `invalid_json` naming the line and column.

**Errors in the schema.** FastAPI documents a 422 that this server never sends (validation errors
are 400, server/errors.py) and none of the errors it does send. `openapi_schema` drops the 422 and
documents, in OpenAI's error shape, what every operation can answer: 400 when it takes parameters
or a body, 413 with a body, 401/403/429 when it needs authentication (a bearer key, or the
session cookie with `X-CSRF-Token` on writes), 404 with an id in the path; a route adds its own
(409, 415, 503, ...) with `errors_doc`. A method a path does not have answers 405 with `Allow`.
A streamed answer (`text/event-stream`) is described event by event (`itemSchema`, OpenAPI 3.2).
"""

import http
import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic_core import from_json

from chatloop.server.errors import ErrorResponse

UNSAFE = {"post", "patch", "put", "delete"}

DESCRIPTIONS = {
    400: "Invalid request: a body that is not JSON, a wrong type, a value out of range or an unknown "
         "field (`param` names it).",
    401: "Not authenticated: no session cookie or API key, or an expired session or revoked key.",
    403: "Refused: a cookie-authenticated write without the csrftoken cookie's value in X-CSRF-Token, "
         "or a disabled account.",
    404: "No such object. Another user's object answers the same.",
    409: "Conflicts with the current state (the message says how).",
    413: "The request body is larger than the server accepts.",
    415: "Unsupported media type.",
    429: "Rate limited: retry after the seconds in Retry-After.",
    503: "Temporarily unavailable (the engine's queue is full, or the database cannot be reached): retry after "
         "the seconds in Retry-After.",
    504: "Reading the input (an image's text) took longer than its budget.",
}
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {  # one event (OpenAPI 3.2 `itemSchema`)
    "data": {"type": "string", "description": "A JSON object, or `[DONE]` (the last event)."},
    "event": {"type": "string"}, "id": {"type": "string"}, "retry": {"type": "integer", "minimum": 0}}}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = from_json(body, allow_inf_nan=False)
            except ValueError as e:
                # FastAPI turns a JSONDecodeError into its json_invalid validation error (a 400 here)
                raise json.JSONDecodeError(str(e).replace("recursion limit exceeded", "nested too deeply"),
                                           "", 0) from None
        return self._json


class JSONRoute(APIRoute):
    """An APIRoute whose handler reads JSON bodies with StrictJSONRequest."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def strict_json(request: Request):
            return await handler(StrictJSONRequest(request.scope, request.receive, request._send))

        return strict_json


def errors_doc(*statuses: int | tuple[int, str]) -> dict[int, dict]:
    """`responses=` for a route's own errors: statuses, or (status, description) pairs."""
    out = {}
    for item in statuses:
        status, description = item if isinstance(item, tuple) else (item, DESCRIPTIONS[item])
        out[status] = {"description": description}
    return out


def openapi_schema(app: FastAPI) -> dict:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _document_errors(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def _document_errors(schema: dict) -> None:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    error = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error.pop("$defs", {}))
    schemas["ErrorResponse"] = error
    if "securitySchemes" in components:
        components["securitySchemes"]["csrf"] = {
            "type": "apiKey", "in": "header", "name": "X-CSRF-Token",
            "description": "The csrftoken cookie's value; cookie-authenticated writes need it."}
        components["securitySchemes"]["csrf_cookie"] = {
            "type": "apiKey", "in": "cookie", "name": "csrftoken",
            "description": "Set by signup or login beside the session; a write sends it back in X-CSRF-Token too."}
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            statuses = {int(k) for k in responses if k[0] in "45"}
            params = op.get("parameters", [])
            if params or "requestBody" in op:
                statuses.add(400)
            if "requestBody" in op:
                statuses.add(413)
            if any(p["in"] == "path" for p in params):
                statuses.add(404)
            if path.startswith(("/api/", "/v1/")):
                statuses.add(503)  # every one of them reads the database (accounts, keys), which may be down
            if op.get("security"):
                statuses |= {401, 403, 429}
                if method in UNSAFE:
                    op["security"] = [{"bearer": []}, {"session": [], "csrf": [], "csrf_cookie": []}]
            for status in sorted(statuses):
                entry = responses.setdefault(str(status), {})
                entry["content"] = content
                described = entry.get("description")
                if not described or described == _http_phrase(status):
                    entry["description"] = DESCRIPTIONS[status]
                    if status == 403 and path.startswith("/api/admin"):
                        entry["description"] = DESCRIPTIONS[403] + " Also: not an administrator."
                if status in (429, 503):
                    entry["headers"] = RETRY_AFTER
            for response in responses.values():
                if "text/event-stream" in response.get("content", {}):
                    response["content"]["text/event-stream"] = {"itemSchema": SSE_EVENT}
            op["responses"] = dict(sorted(responses.items()))


def _http_phrase(status: int) -> str:
    return http.HTTPStatus(status).phrase
