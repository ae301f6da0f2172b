"""A registered version's files: CHATLOOP_HOME/models/NAME/VERSION/, written once, never changed.

    path = store_version(source_dir, "my-model", "3", lineage={"parent": "my-model:2", ...})

The source directory (a training run's `final/`, the converted default model, any Hugging Face
model directory) is verified against its own manifest first, then its files are hard-linked (or
copied, across filesystems) into a staging directory beside the destination, a new manifest naming
NAME:VERSION with its lineage is written, and the directory is renamed into place. A reader never
sees a half-written version, and later changes to the source (a retrained run replaces its
`final/`) do not reach the stored version: hard links keep the old bytes, and sources are only
ever replaced, never edited in place.
"""

import os
import shutil
from pathlib import Path

from chatloop.config import get_settings
from chatloop.errors import UsageError
from chatloop.fsutil import publish_dir, staging_dir
from chatloop.models.manifest import MANIFEST, read_manifest, verify_manifest, write_manifest

# Manifest keys of a source that describe how it was made; they carry over into the version.
LINEAGE_KEYS = ("parent", "stage", "data_sha256", "data_files", "config", "metrics", "source")


def version_dir(name: str, version: str) -> Path:
    return get_settings().models_dir / name / version


def source_lineage(directory: Path) -> dict:
    """The lineage a source directory's manifest records (empty for a plain HF directory)."""
    manifest = read_manifest(directory) or {}
    return {k: manifest[k] for k in LINEAGE_KEYS if k in manifest}


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed: copy the bytes
        shutil.copy2(src, dst)


def store_version(source: Path, name: str, version: str, lineage: dict) -> Path:
    """Write NAME/VERSION from `source` (verified first); returns the new directory. Refuses to
    overwrite an existing version (versions are immutable)."""
    if not (source / "config.json").is_file():
        raise UsageError(f"{source} is not a Hugging Face model directory (no config.json)")
    verify_manifest(source)
    final = version_dir(name, version)
    if final.exists():
        raise UsageError(f"{final} already exists: versions are immutable")
    tmp = staging_dir(final)
    try:
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source)
            if path.is_file() and rel.as_posix() != MANIFEST and not rel.parts[0].startswith("."):
                _link_or_copy(path, tmp / rel)
        write_manifest(tmp, name=name, version=version, **lineage)
        if not publish_dir(tmp, final):
            raise UsageError(f"{final} was written by someone else meanwhile; retry")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
