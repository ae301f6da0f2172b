"""HTTP authentication: session cookies with double-submit CSRF, and bearer API keys.

Every route except /healthz, signup and login depends on `principal`, which accepts either
`Authorization: Bearer KEY` or the `session` cookie. Cookie-authenticated writes must echo the
`csrftoken` cookie in `X-CSRF-Token`. Session tokens are stored as sha256, like API keys
(store/accounts.py holds the account rules and the hashing).
"""

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import Request, Response
from sqlalchemy import select

from chatloop.server.errors import APIError
from chatloop.store.accounts import sha256
from chatloop.store.models import ApiKey, LoginSession, User

SESSION_COOKIE = "session"
CSRF_COOKIE = "csrftoken"
CSRF_HEADER = "x-csrf-token"
SESSION_DAYS = 30
UNSAFE = {"POST", "PATCH", "PUT", "DELETE"}


@dataclass
class Principal:
    user: User
    via: str  # "session" or "key"
    api_key_id: str | None = None


def start_session(db, response: Response, user: User, secure: bool) -> None:
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    with db.session() as s:
        s.add(LoginSession(user_id=user.id, token_hash=sha256(token), csrf_token=csrf,
                           expires_at=datetime.now(UTC) + timedelta(days=SESSION_DAYS)))
    age = SESSION_DAYS * 86400
    response.set_cookie(SESSION_COOKIE, token, max_age=age, httponly=True, samesite="lax", secure=secure, path="/")
    response.set_cookie(CSRF_COOKIE, csrf, max_age=age, httponly=False, samesite="lax", secure=secure, path="/")


def end_session(db, request: Request, response: Response) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        with db.session() as s:
            for row in s.scalars(select(LoginSession).where(LoginSession.token_hash == sha256(token))):
                s.delete(row)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)  # SQLite returns naive datetimes


def authenticate(request: Request, db) -> Principal:
    """The caller's identity, or APIError 401/403. Enforces CSRF for cookie-authenticated writes."""
    header = request.headers.get("authorization", "")
    now = datetime.now(UTC)
    with db.session() as s:
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise APIError(401, "malformed Authorization header: use 'Bearer <API key>'", code="invalid_api_key")
            key = s.scalar(select(ApiKey).where(ApiKey.key_hash == sha256(token.strip())))
            if key is None or key.revoked_at is not None:
                raise APIError(401, "invalid or revoked API key", code="invalid_api_key")
            user = s.get(User, key.user_id)
            key.last_used_at = now
            principal = Principal(user=user, via="key", api_key_id=key.id)
        else:
            token = request.cookies.get(SESSION_COOKIE)
            if not token:
                raise APIError(401, "not signed in: send a session cookie or 'Authorization: Bearer <API key>'",
                               code="unauthenticated")
            session = s.scalar(select(LoginSession).where(LoginSession.token_hash == sha256(token)))
            if session is None or _aware(session.expires_at) < now:
                raise APIError(401, "session expired or invalid: sign in again", code="unauthenticated")
            if request.method in UNSAFE:
                sent = request.headers.get(CSRF_HEADER, "")
                cookie = request.cookies.get(CSRF_COOKIE, "")
                if not sent or not hmac.compare_digest(sent, session.csrf_token) or sent != cookie:
                    raise APIError(403, "missing or wrong CSRF token (send the csrftoken cookie in X-CSRF-Token)",
                                   code="csrf_failed")
            principal = Principal(user=s.get(User, session.user_id), via="session")
    if principal.user is None:
        raise APIError(401, "account no longer exists", code="unauthenticated")
    if principal.user.disabled:
        raise APIError(403, "this account is disabled", code="account_disabled")
    return principal
