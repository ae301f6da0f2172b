"""Model references with the registry: the resolver every command uses.

    resolve_ref("my-model")          # its stable version
    resolve_ref("my-model@canary")   # the version its canary runs
    resolve_ref("default")           # the default model's stable version (registered on first use)
    resolve_ref("runs:my-sft")       # anything else: models/refs.py (runs, hf:, NAME:VERSION, paths)

The registry lives in the database (`db`, or the configured one when not given), which is only
opened for the forms that need it.
"""

from pathlib import Path

from chatloop.errors import ModelRefError
from chatloop.models.refs import DEFAULT_NAME, DEFAULT_REF, ResolvedRef, channel_ref, resolve
from chatloop.registry.releases import CANARY, STABLE, channels
from chatloop.registry.versions import get_version, resolved
from chatloop.store.db import Database


def default_database() -> Database:
    from chatloop.config import get_settings

    return Database(get_settings().db_url)


def channel_version(db: Database, name: str, channel: str | None) -> ResolvedRef:
    """The version a channel of a registered name serves (stable when `channel` is None)."""
    channel = channel or STABLE
    if channel not in (STABLE, CANARY):
        raise ModelRefError(f"unknown channel '{channel}' in {name}@{channel}: use stable or canary")
    with db.session() as s:
        current = channels(s, name)
        version = current.canary if channel == CANARY else current.stable
        if version is None:
            what = "no canary running" if channel == CANARY else "no registered model by that name"
            raise ModelRefError(f"unknown model '{name}' ({what}); `chatloop models list` shows the registry")
        return resolved(get_version(s, name, version))


def resolve_ref(ref: str, db: Database | None = None, *, allow_paths: bool = True) -> ResolvedRef:
    """The exact version any REF names (ModelRefError, exit code 2, otherwise)."""
    ref = ref.strip()
    if ref == DEFAULT_REF:
        from chatloop.registry.default import ensure_default

        db = db or default_database()
        ensure_default(db)
        return channel_version(db, DEFAULT_NAME, None)
    named = channel_ref(ref)
    if named is not None and not (allow_paths and Path(ref).expanduser().exists()):
        return channel_version(db or default_database(), *named)
    return resolve(ref, allow_paths=allow_paths)
