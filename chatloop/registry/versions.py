"""Registered model versions: rows in `model_versions` plus their files (registry/artifacts.py).

    with db.session() as s:
        v = register(s, Path("runs/my-sft/final"), "my-model", source="runs:my-sft", actor="me@x.org")
        v.model_id                     # "my-model:2"

Versions of a name are numbered 1, 2, 3, ... in registration order; a version is immutable once
registered. Its lineage (parent version, stage, data snapshot hash, config, metrics) comes from
the source's manifest, which training runs write; the version's own manifest repeats it, so the
files on disk describe themselves without the database. `ensure_default` registers the bundled
default model as version 1 of its name, stable, the first time a registry is opened.
"""

import json
import logging
import re
import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from chatloop.errors import NotFoundError, UsageError
from chatloop.models.manifest import model_id, read_manifest
from chatloop.models.refs import NAME_RE, ResolvedRef
from chatloop.registry.artifacts import source_lineage, store_version, version_dir
from chatloop.store.models import ModelVersion, ReleaseEvent

log = logging.getLogger(__name__)
SYSTEM = "system"


def check_name(name: str) -> str:
    if not NAME_RE.match(name or "") or len(name) > 100:
        raise UsageError(f"invalid model name {name!r}: use lowercase letters, digits, '.', '_' and '-'",
                         param="name")
    return name


def next_version(s: Session, name: str) -> str:
    """One more than the highest numbered version in the database or on disk (a home shared by
    several databases never reuses a directory)."""
    numbers = [int(v) for v in s.scalars(select(ModelVersion.version).where(ModelVersion.name == name))
               if v.isdigit()]
    folder = version_dir(name, "0").parent
    if folder.is_dir():
        numbers += [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
    return str(max(numbers, default=0) + 1)


def get_version(s: Session, name: str, version: str) -> ModelVersion:
    row = s.scalar(select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version))
    if row is None:
        raise NotFoundError(f"no registered version {model_id(name, version)}", param="model",
                            code="model_not_found")
    return row


def list_versions(s: Session, name: str | None = None) -> list[ModelVersion]:
    stmt = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.created_at)
    if name is not None:
        stmt = stmt.where(ModelVersion.name == name)
    return list(s.scalars(stmt))


def names(s: Session) -> list[str]:
    return list(s.scalars(select(ModelVersion.name).distinct().order_by(ModelVersion.name)))


def resolved(row: ModelVersion) -> ResolvedRef:
    """The version as a model reference the engine pool can load."""
    return ResolvedRef("dir", Path(row.path), row.name, row.version)


def version_out(row: ModelVersion) -> dict:
    """A version as the CLI's --json and the admin API show it."""
    return {
        "id": model_id(row.name, row.version), "name": row.name, "version": row.version, "path": row.path,
        "parent": row.parent, "stage": row.stage, "source": row.source, "data_hash": row.data_hash,
        "config": json.loads(row.config) if row.config else None,
        "metrics": json.loads(row.metrics) if row.metrics else None,
        "created_by": row.created_by, "created_at": row.created_at.isoformat(),
    }


def register(s: Session, source: Path, name: str, *, source_label: str, actor: str = SYSTEM,
             version: str | None = None, extra_lineage: dict | None = None) -> ModelVersion:
    """Store `source` (a model directory) as the next version of `name` and record it. Run it in a
    session of its own: a lost race for a version number rolls the session back and retries."""
    check_name(name)
    lineage = {**source_lineage(source), **(extra_lineage or {}), "source": source_label}
    for _attempt in range(5):
        number = version or next_version(s, name)
        path = store_version(source, name, number, lineage)
        row = ModelVersion(
            name=name, version=number, path=str(path), parent=lineage.get("parent"), stage=lineage.get("stage"),
            source=source_label, data_hash=lineage.get("data_sha256"),
            config=json.dumps(lineage["config"]) if lineage.get("config") is not None else None,
            metrics=json.dumps(lineage["metrics"]) if lineage.get("metrics") is not None else None,
            created_by=actor,
        )
        s.add(row)
        s.add(ReleaseEvent(name=name, action="register", version=number, actor=actor, reason=f"from {source_label}"))
        try:
            s.flush()
            return row
        except IntegrityError:  # another process took this number meanwhile: use the next one
            s.rollback()
            shutil.rmtree(path, ignore_errors=True)
            if version:
                raise UsageError(f"{model_id(name, version)} is already registered") from None
    raise UsageError(f"could not register a new version of {name}: too many concurrent registrations")


def adopt_existing(s: Session, name: str, version: str, source_label: str) -> ModelVersion | None:
    """Record a version whose directory already exists with a matching manifest (a CHATLOOP_HOME
    shared with another database); None if there is no such directory."""
    path = version_dir(name, version)
    manifest = read_manifest(path) if path.is_dir() else None
    if not manifest or manifest.get("source") != source_label:
        return None
    row = ModelVersion(name=name, version=version, path=str(path), parent=manifest.get("parent"),
                       stage=manifest.get("stage"), source=source_label, data_hash=manifest.get("data_sha256"),
                       created_by=SYSTEM)
    s.add(row)
    s.add(ReleaseEvent(name=name, action="register", version=version, actor=SYSTEM, reason=f"from {source_label}"))
    return row


def parse_id(ref: str) -> tuple[str, str]:
    """NAME:VERSION -> (name, version)."""
    m = re.fullmatch(r"([a-z0-9][a-z0-9._-]*):([a-z0-9][a-z0-9._-]*)", ref.strip())
    if not m:
        raise UsageError(f"'{ref}' is not NAME:VERSION", param="model")
    return m.group(1), m.group(2)


def import_ref(s: Session, ref: str, name: str, *, actor: str = SYSTEM) -> ModelVersion:
    """Register what a REF names (a model directory, a .gguf file, runs:RUN, hf:...) under `name`."""
    from chatloop.models.loading import model_directory
    from chatloop.models.refs import resolve

    src = resolve(ref)
    label = ref if ref.startswith(("runs:", "hf:")) else str(src.path)
    return register(s, model_directory(ref), name, source_label=label, actor=actor,
                    extra_lineage={} if src.kind == "dir" else {"stage": "pretrained"})
