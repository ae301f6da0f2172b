"""Request dependencies: the app's services, the authenticated principal (+ rate limit), admin."""

from dataclasses import dataclass

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyCookie, HTTPBearer

from chatloop.config import Settings
from chatloop.server.auth import Principal, authenticate
from chatloop.server.errors import APIError
from chatloop.server.limits import RateLimiter
from chatloop.server.metrics import Metrics
from chatloop.serving.service import ChatService
from chatloop.store.db import Database
from chatloop.tools.base import Toolbox


@dataclass
class Services:
    settings: Settings
    db: Database
    chat: ChatService
    limiter: RateLimiter
    metrics: Metrics
    tools: Toolbox  # what conversations can offer the model (GET /api/tools)


def services(request: Request) -> Services:
    return request.app.state.services


# What /openapi.json shows as the two ways in; authenticate() does the checking itself.
BEARER = HTTPBearer(scheme_name="bearer", auto_error=False, description="An API key: Authorization: Bearer KEY.")
SESSION = APIKeyCookie(name="session", scheme_name="session", auto_error=False,
                       description="The session cookie set by signup or login (writes also need X-CSRF-Token).")


def principal(request: Request, svc: Services = Depends(services), _key=Security(BEARER),
              _cookie=Security(SESSION)) -> Principal:
    """The authenticated caller; rate-limited per user and, for key requests, per key too."""
    p = authenticate(request, svc.db)
    wait = svc.limiter.check(f"user:{p.user.id}")
    if p.api_key_id and not wait:
        wait = svc.limiter.check(f"key:{p.api_key_id}")
    if wait:
        raise APIError(429, "rate limit exceeded: slow down", code="rate_limit_exceeded",
                       headers={"Retry-After": RateLimiter.retry_after(wait)})
    return p


def admin(p: Principal = Depends(principal)) -> Principal:
    if not p.user.is_admin:
        raise APIError(403, "administrators only", code="forbidden")
    return p
