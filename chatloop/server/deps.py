"""Request dependencies: the app's services, the authenticated principal (+ rate limit), admin."""

from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Depends, Request

from chatloop.engine.scheduler import Engine
from chatloop.server.auth import Principal, authenticate
from chatloop.server.errors import APIError
from chatloop.server.limits import RateLimiter
from chatloop.server.metrics import Metrics
from chatloop.store.db import Database


@dataclass
class ServerConfig:
    model: str = "default"
    dtype: str = "auto"
    db_url: str | None = None
    max_batch: int = 8
    max_waiting: int = 64
    max_body_bytes: int = 1 << 20
    rate_limit_per_minute: int = 600
    secure_cookies: bool = False
    web_dir: Path | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Services:
    config: ServerConfig
    db: Database
    engine: Engine
    limiter: RateLimiter
    metrics: Metrics

    @property
    def model_names(self) -> set[str]:
        """REFs that name the served model in requests."""
        name = self.engine.model_id.split(":", 1)[0]
        return {"default", self.config.model, self.engine.model_id, name}


def services(request: Request) -> Services:
    return request.app.state.services


def principal(request: Request, svc: Services = Depends(services)) -> Principal:
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
