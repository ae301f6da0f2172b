"""Release channels and the actions that move them, each recorded in the audit log.

Every model name has a `stable` channel (what `NAME` serves) and may have a `canary` (a version
tried on a share of new conversations). The actions:

    promote(s, name, version)          stable := version (a canary of that version graduates)
    set_canary(s, name, version, 10)   10% of new conversations get `version`
    end_canary(s, name)                the canary stops; everyone gets stable
    rollback(s, name)                  undo the latest release: end a running canary, else put back
                                       the stable version that the last promotion replaced

Release state lives in the database only, so several servers sharing one database agree: each
polls `last_event_id` and reloads the table (`release_table`) when it changes.
"""

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from chatloop.errors import UsageError
from chatloop.models.manifest import model_id
from chatloop.registry.versions import SYSTEM, get_version
from chatloop.store.models import Channel, ReleaseEvent

STABLE, CANARY = "stable", "canary"


@dataclass(frozen=True)
class Channels:
    name: str
    stable: str | None = None
    canary: str | None = None
    percent: int = 0  # the canary's share of new conversations

    def as_dict(self) -> dict:
        return {"name": self.name, "stable": self.stable, "canary": self.canary,
                "canary_percent": self.percent if self.canary else 0}


def channels(s: Session, name: str) -> Channels:
    rows = {c.channel: c for c in s.scalars(select(Channel).where(Channel.name == name))}
    canary = rows.get(CANARY)
    return Channels(name, rows[STABLE].version if STABLE in rows else None,
                    canary.version if canary else None, canary.percent if canary else 0)


def _set(s: Session, name: str, channel: str, version: str, percent: int = 100) -> None:
    row = s.get(Channel, (name, channel))
    if row is None:
        s.add(Channel(name=name, channel=channel, version=version, percent=percent))
    else:
        row.version, row.percent, row.updated_at = version, percent, datetime.now(UTC)


def _log(s: Session, name: str, action: str, version: str | None, previous: str | None, actor: str,
         reason: str, percent: int | None = None) -> ReleaseEvent:
    event = ReleaseEvent(name=name, action=action, version=version, previous=previous, percent=percent,
                         actor=actor, reason=reason)
    s.add(event)
    s.flush()
    return event


def promote(s: Session, name: str, version: str, *, actor: str = SYSTEM, reason: str = "") -> ReleaseEvent:
    get_version(s, name, version)
    current = channels(s, name)
    if current.stable == version:
        raise UsageError(f"{model_id(name, version)} is already the stable version")
    _set(s, name, STABLE, version)
    if current.canary == version:
        s.delete(s.get(Channel, (name, CANARY)))  # the canary graduated
    return _log(s, name, "promote", version, current.stable, actor, reason)


def set_canary(s: Session, name: str, version: str, percent: int, *, actor: str = SYSTEM,
               reason: str = "") -> ReleaseEvent:
    get_version(s, name, version)
    if not 1 <= percent <= 100:
        raise UsageError(f"the canary share must be between 1 and 100 percent, not {percent}", param="percent")
    current = channels(s, name)
    if current.stable is None:
        raise UsageError(f"{name} has no stable version yet: promote one first")
    if current.stable == version:
        raise UsageError(f"{model_id(name, version)} is the stable version; a canary must be another one")
    _set(s, name, CANARY, version, percent)
    return _log(s, name, "canary", version, current.canary, actor, reason, percent)


def end_canary(s: Session, name: str, *, actor: str = SYSTEM, reason: str = "") -> ReleaseEvent:
    current = channels(s, name)
    if current.canary is None:
        raise UsageError(f"{name} has no canary running")
    s.delete(s.get(Channel, (name, CANARY)))
    return _log(s, name, "end-canary", current.stable, current.canary, actor, reason)


def stable_history(s: Session, name: str) -> list[str]:
    """The stable versions still to fall back on, oldest first (promotions minus rollbacks)."""
    stack: list[str] = []
    for e in s.scalars(select(ReleaseEvent).where(ReleaseEvent.name == name).order_by(ReleaseEvent.id)):
        if e.action == "promote":
            stack.append(e.version)
        elif e.action == "rollback" and stack:
            stack.pop()
    return stack


def rollback(s: Session, name: str, *, actor: str = SYSTEM, reason: str = "") -> ReleaseEvent:
    """Undo the latest release of `name`: a running canary ends; otherwise stable goes back to the
    version the last promotion replaced."""
    current = channels(s, name)
    if current.canary is not None:
        return end_canary(s, name, actor=actor, reason=reason or "rollback")
    history = stable_history(s, name)
    if len(history) < 2:
        raise UsageError(f"{name} has no earlier stable version to roll back to")
    back = history[-2]
    _set(s, name, STABLE, back)
    return _log(s, name, "rollback", back, current.stable, actor, reason)


def history(s: Session, name: str | None = None, limit: int = 200) -> list[ReleaseEvent]:
    stmt = select(ReleaseEvent).order_by(ReleaseEvent.id.desc()).limit(limit)
    if name is not None:
        stmt = stmt.where(ReleaseEvent.name == name)
    return list(s.scalars(stmt))


def event_out(e: ReleaseEvent) -> dict:
    return {"id": e.id, "name": e.name, "action": e.action, "version": e.version, "previous": e.previous,
            "percent": e.percent, "actor": e.actor, "reason": e.reason, "at": e.created_at.isoformat()}


def last_event_id(s: Session) -> int:
    return s.scalar(select(func.max(ReleaseEvent.id))) or 0


# --- what a server serves ---------------------------------------------------------------------------

def bucket(key: str, name: str) -> int:
    """A stable 0-99 bucket for a sticky key (a conversation, a user)."""
    return int.from_bytes(hashlib.sha256(f"{name}\0{key}".encode()).digest()[:4], "big") % 100


@dataclass
class ReleaseTable:
    """A snapshot of every name's channels, as of release event `event_id`."""

    event_id: int = 0
    names: dict[str, Channels] = field(default_factory=dict)

    def pick(self, name: str, channel: str | None = None, key: str | None = None) -> tuple[str, str]:
        """(version, channel) that serves a request for `name`: the given channel if any (canary
        falls back to stable when none runs), else canary for the share of keys (or, without a
        key, of requests) its percentage says, else stable."""
        ch = self.names.get(name)
        if ch is None or ch.stable is None:
            raise UsageError(f"model {name} has no stable version")
        if channel is None and ch.canary is not None:
            draw = bucket(key, name) if key is not None else random.randrange(100)
            channel = CANARY if draw < ch.percent else STABLE
        if channel == CANARY and ch.canary is not None:
            return ch.canary, CANARY
        return ch.stable, STABLE

    def served_versions(self, name: str) -> set[str]:
        ch = self.names.get(name)
        return {v for v in (ch.stable, ch.canary) if v} if ch else set()


def release_table(s: Session) -> ReleaseTable:
    table = ReleaseTable(last_event_id(s))
    for row in s.scalars(select(Channel)):
        current = table.names.get(row.name, Channels(row.name))
        if row.channel == STABLE:
            current = Channels(row.name, row.version, current.canary, current.percent)
        elif row.channel == CANARY:
            current = Channels(row.name, current.stable, row.version, row.percent)
        table.names[row.name] = current
    return table
