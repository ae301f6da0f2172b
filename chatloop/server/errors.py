"""Errors in OpenAI's shape, for /v1 and /api alike: {"error": {"message", "type", "param", "code"}}."""

import json
import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatloop.errors import (
    AuthenticationFailed, ChatloopError, ConflictError, ContextTooLongError, DatabaseUnavailable, EngineOverloaded,
    ModelRefError, NotFoundError, PermissionDenied, RemoteEngineError, TimedOut, TooLargeError, UnsupportedMediaError,
    UsageError,
)

log = logging.getLogger(__name__)

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "overloaded_error",
    504: "timeout_error",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The body of every error response (OpenAPI component `ErrorResponse`)."""

    error: ErrorDetail


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def not_found(what: str) -> APIError:
    return APIError(404, f"{what} not found", code="not_found")


class ErrorJSONResponse(JSONResponse):
    """Never fails to encode: text that echoes the request (a name, an id) may hold a lone
    surrogate, which UTF-8 cannot carry; it becomes U+FFFD rather than a second error."""

    def render(self, content) -> bytes:
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}
    return ErrorJSONResponse(body, status_code=status, headers=headers)


# Domain errors -> (status, default param, default code); the first matching class wins.
STATUS = [
    (EngineOverloaded, 503, None, "overloaded"),
    (DatabaseUnavailable, 503, None, "database_unavailable"),
    (ModelRefError, 404, "model", "model_not_found"),
    (ContextTooLongError, 400, "messages", "context_length_exceeded"),
    (NotFoundError, 404, None, "not_found"),
    (ConflictError, 409, None, "conflict"),
    (TooLargeError, 413, None, "too_large"),
    (UnsupportedMediaError, 415, None, "unsupported_media_type"),
    (UsageError, 400, None, "invalid_value"),
    (PermissionDenied, 403, None, "forbidden"),
    (AuthenticationFailed, 401, None, "unauthenticated"),
    (TimedOut, 504, None, "timeout"),
    (RemoteEngineError, 502, None, "remote_engine_error"),
    (ChatloopError, 500, None, "internal_error"),
]


def from_chatloop_error(e: ChatloopError) -> APIError:
    status, param, code = next((s, p, c) for cls, s, p, c in STATUS if isinstance(e, cls))
    headers = {"Retry-After": "1"} if status == 503 else None
    return APIError(status, str(e), param=e.param or param, code=e.code or code, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error")
        return f"the request body is not valid JSON: {reason}" if reason else "malformed JSON in the request body", None
    if first.get("loc") == ("body",) and first.get("type") in ("model_attributes_type", "dict_type", "missing"):
        return "the request body must be a JSON object (Content-Type: application/json)", None
    param = _param(first.get("loc", ()))
    where = f" at '{param}'" if param else ""
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    return f"invalid request{where}: {message}", param


def _param(loc) -> str | None:
    """A field's path as OpenAI writes it (messages[0].content), without pydantic's names of the
    union member it tried (str, literal['none','auto','required'], NamedToolChoice, ...)."""
    out = ""
    for p in loc:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p != "body" and re.fullmatch(r"[a-z_][a-z0-9_]*", p) and p not in UNION_TAGS:
            out += f".{p}" if out else p
    return out or None


UNION_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}


def _allowed_methods(request: Request) -> str | None:
    """Every method the published schema has for this path (Starlette's 405 names only the first
    route that matched the path, so GET and POST on one path would answer `Allow: GET`)."""
    for template, item in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods = sorted(m.upper() for m in item)
            return ", ".join(methods + (["HEAD"] if "GET" in methods else []))
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError):
        return error_response(e.status, e.message, e.param, e.code, e.headers)

    @app.exception_handler(ChatloopError)
    async def _chatloop_error(_: Request, e: ChatloopError):
        api = from_chatloop_error(e)
        return error_response(api.status, api.message, api.param, api.code, api.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError):
        message, param = _validation_message(e)
        invalid_json = bool(e.errors()) and e.errors()[0].get("type") == "json_invalid"
        return error_response(400, message, param, "invalid_json" if invalid_json else "invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        message = e.detail if isinstance(e.detail, str) else "error"
        code = getattr(e, "code", None)
        headers = getattr(e, "headers", None)
        if e.status_code == 400 and message == "There was an error parsing the body":  # FastAPI's words
            message = "the request body could not be parsed"
        elif e.status_code == 404 and message == "Not Found":  # Starlette's: no route has this path
            message, code = f"no route {request.url.path}", "not_found"
        elif e.status_code == 405:
            allowed = _allowed_methods(request) or (headers or {}).get("Allow", "")
            headers = {**(headers or {}), "Allow": allowed}
            message = f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
            code = "method_not_allowed"
        return error_response(e.status_code, message, code=code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error", code="internal_error")
