"""Accounts: users, passwords, API keys, sign-up and admin rules — shared by the CLI and the routers.

Passwords are hashed with argon2 (pwdlib); API keys and session tokens are 256-bit random secrets
stored as sha256 (a fast hash is enough for those). Operations raise domain errors
(chatloop/errors.py): UsageError, ConflictError, NotFoundError, PermissionDenied,
AuthenticationFailed — never HTTP ones.
"""

import hashlib
import secrets
from datetime import UTC, datetime

from pwdlib import PasswordHash
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from chatloop.errors import AuthenticationFailed, ConflictError, NotFoundError, PermissionDenied, UsageError
from chatloop.store.models import (
    ApiKey, AppSetting, Attachment, Comparison, Conversation, Correction, Document, Feedback, Message, UsageRecord, User,
)

MIN_PASSWORD = 8
KEY_PREFIX = "cl-"
SIGNUP_SETTING = "signup_enabled"

_hasher = PasswordHash.recommended()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, hashed: str) -> bool:
    return _hasher.verify(password, hashed)


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or " " in email or len(email) > 320:
        raise UsageError(f"not a valid email address: {email!r}", param="email")
    return email


def create_user(s: Session, email: str, password: str, admin: bool | None = None) -> User:
    """Create an account; the very first one is an administrator (as in Open WebUI)."""
    email = normalize_email(email)
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"password must be at least {MIN_PASSWORD} characters", param="password",
                         code="weak_password")
    hashed = hash_password(password)  # slow on purpose (argon2): before any row is touched
    if s.scalar(select(User).where(User.email == email)):
        raise ConflictError("an account with this email already exists", param="email", code="email_taken")
    first = s.scalar(select(func.count()).select_from(User)) == 0
    user = User(email=email, password_hash=hashed, is_admin=first if admin is None else admin)
    s.add(user)
    s.flush()
    return user


def check_credentials(s: Session, email: str, password: str) -> User:
    user = s.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None or not verify_password(password, user.password_hash):
        raise AuthenticationFailed("wrong email or password", code="invalid_credentials")
    if user.disabled:
        raise PermissionDenied("this account is disabled", code="account_disabled")
    return user


def user_by_email(s: Session, email: str) -> User:
    user = s.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NotFoundError(f"no account with email {email}; create it with `chatloop users create`", param="email")
    return user


def signup_enabled(s: Session) -> bool:
    row = s.get(AppSetting, SIGNUP_SETTING)
    return row is None or row.value == "true"


def set_signup_enabled(s: Session, enabled: bool) -> None:
    s.merge(AppSetting(key=SIGNUP_SETTING, value="true" if enabled else "false"))


def check_signup_open(s: Session) -> None:
    if not signup_enabled(s):
        raise PermissionDenied("sign-up is disabled on this server; ask an administrator", code="signup_disabled")


def update_profile(s: Session, user_id: str, changes: dict) -> User:
    user = s.get(User, user_id)
    for field, value in changes.items():
        setattr(user, field, value)
    return user


def delete_user_data(s: Session, user_id: str) -> None:
    """Every conversation, message, upload, document, feedback and usage row of a user (the account stays)."""
    for table in (Feedback, Comparison, Correction, UsageRecord, Attachment, Document):
        s.execute(delete(table).where(table.user_id == user_id))
    for conv in s.scalars(select(Conversation).where(Conversation.user_id == user_id)):
        s.delete(conv)  # its messages cascade


# --- API keys -------------------------------------------------------------------------------------

def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(s: Session, user_id: str, name: str) -> tuple[ApiKey, str]:
    """A new key for `user_id` and its secret (shown once; only its sha256 is stored)."""
    secret = new_api_key()
    key = ApiKey(user_id=user_id, name=name, prefix=secret[: len(KEY_PREFIX) + 6], key_hash=sha256(secret))
    s.add(key)
    s.flush()
    return key, secret


def list_keys(s: Session, user_id: str) -> list[ApiKey]:
    return list(s.scalars(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc())))


def revoke_key(s: Session, user_id: str, key_id: str) -> None:
    key = s.get(ApiKey, key_id)
    if key is None or key.user_id != user_id:
        raise NotFoundError("API key not found")
    key.revoked_at = key.revoked_at or datetime.now(UTC)


# --- administration -------------------------------------------------------------------------------

def list_users(s: Session) -> list[User]:
    return list(s.scalars(select(User).order_by(User.created_at)))


def admin_update_user(s: Session, admin_id: str, user_id: str, changes: dict) -> User:
    user = s.get(User, user_id)
    if user is None:
        raise NotFoundError("user not found")
    if user.id == admin_id and (changes.get("disabled") or changes.get("is_admin") is False):
        raise UsageError("administrators cannot disable or demote themselves", code="self_lockout")
    for field, value in changes.items():
        setattr(user, field, value)
    return user


def usage_counts(s: Session) -> dict:
    """Counts for the admin dashboard: accounts, activity, feedback, tokens served."""
    def count(model, *where):
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0

    return {
        "users": count(User),
        "conversations": count(Conversation),
        "messages": count(Message),
        "feedback_up": count(Feedback, Feedback.rating > 0),
        "feedback_down": count(Feedback, Feedback.rating < 0),
        "comparisons": count(Comparison),
        "corrections": count(Correction),
        "api_requests": count(UsageRecord),
        "completion_tokens": s.scalar(select(func.coalesce(func.sum(UsageRecord.completion_tokens), 0))),
    }
