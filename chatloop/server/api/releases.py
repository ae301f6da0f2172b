"""Release controls for administrators (thin routes over chatloop/registry/): the registry's names,
versions and channels with the audit log, and promote, canary and rollback.

A promotion through this API passes the same evaluation gate as `chatloop models promote`, judged
from the stored evaluations of both versions (a flywheel turn or `chatloop models promote` stores
them); without them it answers 409 saying how to evaluate, unless `force` comes with a reason.
Every action is logged with the administrator's e-mail and takes effect in this server at once and
in the others sharing the database within seconds.
"""

from anyio import from_thread
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from chatloop.errors import ConflictError, UsageError
from chatloop.registry import releases
from chatloop.registry.evaluations import stored_gate, stored_results
from chatloop.registry.versions import list_versions, names, parse_id, version_out
from chatloop.server.api.responses import Promotion, ReleaseEventOut, ReleasesOverview
from chatloop.server.auth import Principal
from chatloop.server.deps import Services, admin, services
from chatloop.server.routing import JSONRoute, errors_doc

router = APIRouter(prefix="/api/admin/releases", tags=["releases"], route_class=JSONRoute)
NO_VERSION = (404, "No such registered version.")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Field(default="", max_length=2000)


VERSION_ID = r"^\s*[a-z0-9][a-z0-9._-]*:[a-z0-9][a-z0-9._-]*\s*$"  # registry/versions.parse_id


class PromoteIn(Body):
    model: str = Field(description="NAME:VERSION to make stable.", max_length=300, pattern=VERSION_ID)
    force: bool = Field(default=False, description="Skip the evaluation gate (needs a reason).")


class CanaryIn(Body):
    model: str = Field(description="NAME:VERSION to try on a share of new conversations.", max_length=300,
                       pattern=VERSION_ID)
    percent: int = Field(ge=1, le=100)


class RollbackIn(Body):
    name: str = Field(max_length=100)


@router.get("", response_model=ReleasesOverview)
def overview(_: Principal = Depends(admin), svc: Services = Depends(services)):
    with svc.db.session() as s:
        out = []
        for name in names(s):
            versions = []
            for v in list_versions(s, name):
                versions.append({**version_out(v), "evals": stored_results(s, v.name, v.version)})
            out.append({**releases.channels(s, name).as_dict(), "versions": versions})
        events = [releases.event_out(e) for e in releases.history(s, limit=100)]
    return {"models": out, "events": events, "serving": svc.chat.releases()}


@router.post("/promote", response_model=Promotion, responses=errors_doc(NO_VERSION, (409, (
    "The evaluation gate refused (`gate_refused`), or there are no stored evaluations to gate on "
    "(`not_evaluated`)."))))
def promote(body: PromoteIn, p: Principal = Depends(admin), svc: Services = Depends(services)):
    if body.force and not body.reason.strip():
        raise UsageError("a forced promotion needs a reason (it is kept in the audit log)", param="reason")
    name, version = parse_id(body.model)
    with svc.db.session() as s:
        stable = releases.channels(s, name).stable
        gate = None
        if not body.force and stable is not None:
            gate = stored_gate(s, name, version, stable)
            if gate is None:
                raise ConflictError(f"{body.model} and {name}:{stable} have no stored evaluations to gate on: run "
                                    f"`chatloop models promote {body.model}` (it evaluates both), or force it with "
                                    "a reason", param="model", code="not_evaluated")
            if not gate["passed"]:
                raise ConflictError("the evaluation gate refused: " + "; ".join(gate["reasons"]), param="model",
                                    code="gate_refused")
        event = releases.promote(s, name, version, actor=p.user.email,
                                 reason=f"forced: {body.reason}" if body.force else body.reason)
        out = {"event": releases.event_out(event), "gate": gate}
    from_thread.run(svc.chat.refresh)  # this server switches now; the others at their next poll
    return out


@router.post("/canary", response_model=ReleaseEventOut, responses=errors_doc(NO_VERSION))
def canary(body: CanaryIn, p: Principal = Depends(admin), svc: Services = Depends(services)):
    name, version = parse_id(body.model)
    with svc.db.session() as s:
        out = releases.event_out(releases.set_canary(s, name, version, body.percent, actor=p.user.email,
                                                     reason=body.reason))
    from_thread.run(svc.chat.refresh)  # this server switches now; the others at their next poll
    return out


@router.post("/rollback", response_model=ReleaseEventOut, responses=errors_doc(NO_VERSION))
def rollback(body: RollbackIn, p: Principal = Depends(admin), svc: Services = Depends(services)):
    with svc.db.session() as s:
        out = releases.event_out(releases.rollback(s, body.name, actor=p.user.email, reason=body.reason))
    from_thread.run(svc.chat.refresh)  # this server switches now; the others at their next poll
    return out
