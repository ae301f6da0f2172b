"""Accounts (thin routes over store/accounts.py): signup/login/logout, my profile and settings,
API keys, delete-my-data, and administration."""

from fastapi import APIRouter, Depends, Request, Response

from chatloop.server.api.responses import AdminStats, KeyOut, SettingsOut, UserOut
from chatloop.server.api.schemas import (
    AdminSettings, AdminUserPatch, Credentials, KeyCreate, SignupIn, UserPatch, key_out, user_out,
)
from chatloop.server.auth import Principal, end_session, start_session
from chatloop.server.deps import Services, admin, principal, services
from chatloop.server.routing import JSONRoute, errors_doc
from chatloop.store import accounts

router = APIRouter(prefix="/api", tags=["accounts"], route_class=JSONRoute)


@router.post("/auth/signup", status_code=201, response_model=UserOut, responses=errors_doc(
    (403, "Sign-up is closed (an administrator turned it off)."), (409, "The e-mail address has an account.")))
def signup(body: SignupIn, response: Response, svc: Services = Depends(services)):
    with svc.db.session() as s:
        accounts.check_signup_open(s)
        user = accounts.create_user(s, body.email, body.password)
    start_session(svc.db, response, user, svc.settings.secure_cookies)
    return user_out(user)


@router.post("/auth/login", response_model=UserOut, responses=errors_doc(
    (401, "Wrong e-mail or password."), (403, "This account is disabled.")))
def login(body: Credentials, response: Response, svc: Services = Depends(services)):
    with svc.db.session() as s:
        user = accounts.check_credentials(s, body.email, body.password)
    start_session(svc.db, response, user, svc.settings.secure_cookies)
    return user_out(user)


@router.post("/auth/logout", status_code=204)
def logout(request: Request, response: Response, _: Principal = Depends(principal), svc: Services = Depends(services)):
    end_session(svc.db, request, response)
    response.status_code = 204
    return response


@router.get("/me", response_model=UserOut)
def me(p: Principal = Depends(principal)):
    return user_out(p.user)


@router.patch("/me", response_model=UserOut)
def update_me(body: UserPatch, p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        return user_out(accounts.update_profile(s, p.user.id, body.model_dump(exclude_none=True)))


@router.delete("/me/data", status_code=204)
def delete_my_data(p: Principal = Depends(principal), svc: Services = Depends(services)):
    """Delete every conversation, message and feedback row of mine (the account stays)."""
    with svc.db.session() as s:
        accounts.delete_user_data(s, p.user.id)
    return Response(status_code=204)


@router.get("/keys", response_model=list[KeyOut], response_model_exclude_unset=True)  # no `key`
def list_keys(p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        return [key_out(k) for k in accounts.list_keys(s, p.user.id)]


@router.post("/keys", status_code=201, response_model=KeyOut)
def new_key(body: KeyCreate, p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        key, secret = accounts.create_key(s, p.user.id, body.name)
        return key_out(key, secret)


@router.delete("/keys/{key_id}", status_code=204)
def revoke_key(key_id: str, p: Principal = Depends(principal), svc: Services = Depends(services)):
    with svc.db.session() as s:
        accounts.revoke_key(s, p.user.id, key_id)
    return Response(status_code=204)


@router.get("/admin/users", response_model=list[UserOut])
def admin_users(_: Principal = Depends(admin), svc: Services = Depends(services)):
    with svc.db.session() as s:
        return [user_out(u) for u in accounts.list_users(s)]


@router.patch("/admin/users/{user_id}", response_model=UserOut, responses=errors_doc(
    (400, "Invalid request, or a change an administrator may not make to their own account.")))
def admin_update_user(user_id: str, body: AdminUserPatch, p: Principal = Depends(admin),
                      svc: Services = Depends(services)):
    with svc.db.session() as s:
        return user_out(accounts.admin_update_user(s, p.user.id, user_id, body.model_dump(exclude_none=True)))


@router.get("/admin/settings", response_model=SettingsOut)
def admin_get_settings(_: Principal = Depends(admin), svc: Services = Depends(services)):
    with svc.db.session() as s:
        return {"signup_enabled": accounts.signup_enabled(s)}


@router.patch("/admin/settings", response_model=SettingsOut)
def admin_set_settings(body: AdminSettings, _: Principal = Depends(admin), svc: Services = Depends(services)):
    with svc.db.session() as s:
        accounts.set_signup_enabled(s, body.signup_enabled)
    return {"signup_enabled": body.signup_enabled}


@router.get("/admin/stats", response_model=AdminStats)
def admin_stats(_: Principal = Depends(admin), svc: Services = Depends(services)):
    """Counts for the admin dashboard: accounts, activity, feedback, tokens served, the engines."""
    with svc.db.session() as s:
        counts = accounts.usage_counts(s)
    return {**counts, "engine": svc.chat.stats(), "model": svc.chat.default_id()}
