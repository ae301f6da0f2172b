"""Accounts: signup/login/logout, my profile and settings, API keys, delete-my-data, admin."""

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import delete, func, select

from chatloop.server.auth import (
    KEY_PREFIX, Principal, end_session, hash_password, new_api_key, sha256, start_session, verify_password,
)
from chatloop.server.deps import Services, admin, principal, services
from chatloop.server.errors import APIError, not_found
from chatloop.server.api.schemas import (
    AdminSettings, AdminUserPatch, Credentials, KeyCreate, UserPatch, key_out, user_out,
)
from chatloop.store.models import (
    ApiKey, AppSetting, Comparison, Conversation, Correction, Feedback, Message, UsageRecord, User,
)

router = APIRouter(prefix="/api", tags=["accounts"])
MIN_PASSWORD = 8
SIGNUP_SETTING = "signup_enabled"


def signup_enabled(s) -> bool:
    row = s.get(AppSetting, SIGNUP_SETTING)
    return row is None or row.value == "true"


def create_user(db, email: str, password: str, admin_flag: bool | None = None) -> User:
    """Create an account; the very first one is an administrator (as in Open WebUI)."""
    if len(password) < MIN_PASSWORD:
        raise APIError(400, f"password must be at least {MIN_PASSWORD} characters", param="password",
                       code="weak_password")
    hashed = hash_password(password)
    with db.session() as s:
        if s.scalar(select(User).where(User.email == email)):
            raise APIError(409, "an account with this email already exists", param="email", code="email_taken")
        first = s.scalar(select(func.count()).select_from(User)) == 0
        user = User(email=email, password_hash=hashed, is_admin=first if admin_flag is None else admin_flag)
        s.add(user)
    return user


@router.post("/auth/signup", status_code=201)
def signup(body: Credentials, request: Request, response: Response, svc: Services = Depends(services)):
    with svc.db.session() as s:
        if not signup_enabled(s):
            raise APIError(403, "sign-up is disabled on this server; ask an administrator", code="signup_disabled")
    user = create_user(svc.db, body.email, body.password)
    start_session(svc.db, response, user, svc.config.secure_cookies)
    return user_out(user)


@router.post("/auth/login")
def login(body: Credentials, response: Response, svc: Services = Depends(services)):
    with svc.db.session() as s:
        user = s.scalar(select(User).where(User.email == body.email))
    if user is None or not verify_password(body.password, user.password_hash):
        raise APIError(401, "wrong email or password", code="invalid_credentials")
    if user.disabled:
        raise APIError(403, "this account is disabled", code="account_disabled")
    start_session(svc.db, response, user, svc.config.secure_cookies)
    return user_out(user)


@router.post("/auth/logout", status_code=204)
def logout(request: Request, response: Response, _: Principal = Depends(principal), svc: Services = Depends(services)):
    end_session(svc.db, request, response)
    response.status_code = 204
    return response


@router.get("/me")
def me(p: Principal = Depends(principal)):
    return user_out(p.user)


@router.patch("/me")
def update_me(body: UserPatch, p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        user = s.get(User, p.user.id)
        for field, value in body.model_dump(exclude_none=True).items():
            setattr(user, field, value)
    return user_out(user)


@router.delete("/me/data", status_code=204)
def delete_my_data(p: Principal = Depends(principal), svc: Services = Depends(services)):
    """Delete every conversation, message and feedback row of mine (the account stays)."""
    with svc.db.session() as s:
        for table in (Feedback, Comparison, Correction, UsageRecord):
            s.execute(delete(table).where(table.user_id == p.user.id))
        for conv in s.scalars(select(Conversation).where(Conversation.user_id == p.user.id)):
            s.delete(conv)  # its messages cascade
    return Response(status_code=204)


@router.get("/keys")
def list_keys(p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        keys = s.scalars(select(ApiKey).where(ApiKey.user_id == p.user.id).order_by(ApiKey.created_at.desc()))
        return [key_out(k) for k in keys]


def create_key(db, user_id: str, name: str) -> tuple[ApiKey, str]:
    secret = new_api_key()
    key = ApiKey(user_id=user_id, name=name, prefix=secret[: len(KEY_PREFIX) + 6], key_hash=sha256(secret))
    with db.session() as s:
        s.add(key)
    return key, secret


@router.post("/keys", status_code=201)
def new_key(body: KeyCreate, p: Principal = Depends(principal), svc: Services = Depends(services)):
    key, secret = create_key(svc.db, p.user.id, body.name)
    return key_out(key, secret)


@router.delete("/keys/{key_id}", status_code=204)
def revoke_key(key_id: str, p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        key = s.get(ApiKey, key_id)
        if key is None or key.user_id != p.user.id:
            raise not_found("API key")
        key.revoked_at = key.revoked_at or datetime.now(UTC)
    return Response(status_code=204)


@router.get("/admin/users")
def admin_users(_: Principal = Depends(admin), svc: Services = Depends(services)):
    with svc.db.session() as s:
        return [user_out(u) for u in s.scalars(select(User).order_by(User.created_at))]


@router.patch("/admin/users/{user_id}")
def admin_update_user(user_id: str, body: AdminUserPatch, p: Principal = Depends(admin),
                      svc: Services = Depends(services)):
    with svc.db.session() as s:
        user = s.get(User, user_id)
        if user is None:
            raise not_found("user")
        if user.id == p.user.id and (body.disabled or body.is_admin is False):
            raise APIError(400, "administrators cannot disable or demote themselves", code="self_lockout")
        for field, value in body.model_dump(exclude_none=True).items():
            setattr(user, field, value)
    return user_out(user)


@router.get("/admin/settings")
def get_settings(_: Principal = Depends(admin), svc: Services = Depends(services)):
    with svc.db.session() as s:
        return {"signup_enabled": signup_enabled(s)}


@router.patch("/admin/settings")
def set_settings(body: AdminSettings, _: Principal = Depends(admin), svc: Services = Depends(services)):
    with svc.db.session() as s:
        s.merge(AppSetting(key=SIGNUP_SETTING, value="true" if body.signup_enabled else "false"))
    return {"signup_enabled": body.signup_enabled}


@router.get("/admin/stats")
def admin_stats(_: Principal = Depends(admin), svc: Services = Depends(services)):
    """Counts for the admin dashboard: accounts, activity, feedback, tokens served."""
    def count(s, model, *where):
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0

    with svc.db.session() as s:
        return {
            "users": count(s, User),
            "conversations": count(s, Conversation),
            "messages": count(s, Message),
            "feedback_up": count(s, Feedback, Feedback.rating > 0),
            "feedback_down": count(s, Feedback, Feedback.rating < 0),
            "comparisons": count(s, Comparison),
            "corrections": count(s, Correction),
            "api_requests": count(s, UsageRecord),
            "completion_tokens": s.scalar(select(func.coalesce(func.sum(UsageRecord.completion_tokens), 0))),
            "engine": svc.engine.stats(),
            "model": svc.engine.model_id,
        }
