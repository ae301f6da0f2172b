"""`manifest.json`: the identity of a model directory and the sha256 of every file in it.

A model directory written by chatloop (the converted default model, training outputs, registry
versions) carries a manifest; loading verifies it so that a truncated or tampered file is refused
instead of silently producing garbage.
"""

import json
from pathlib import Path
from typing import Any

from chatloop.errors import ModelRefError
from chatloop.fsutil import atomic_write_text, digest_tree, verify_digests

MANIFEST = "manifest.json"
FORMAT = 1


def write_manifest(directory: Path, *, name: str, version: str, **extra: Any) -> dict:
    manifest = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "files": digest_tree(directory, exclude=MANIFEST),
        **extra,
    }
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(directory: Path) -> dict | None:
    """The parsed manifest, None if the directory has none; a corrupt one raises ModelRefError."""
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelRefError(f"corrupt manifest {path}: {e}; delete the directory to rebuild it") from e
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ModelRefError(f"corrupt manifest {path}: no 'files' map of sha256 digests")
    return manifest


def model_id(name: str, version: str) -> str:
    """The exact version of a model, `name:version`: what answers a request, a run's `parent`."""
    return f"{name}:{version}"


def manifest_id(manifest: dict) -> str:
    """The `name:version` a manifest identifies its model by."""
    return model_id(manifest["name"], manifest["version"])


def verify_manifest(directory: Path) -> dict | None:
    """Check every file listed in the manifest against its sha256; files it does not list are allowed."""
    manifest = read_manifest(directory)
    if manifest is None:
        return None
    problems = verify_digests(directory, manifest["files"], exclude=MANIFEST, strict=False)
    if problems.missing:
        raise ModelRefError(
            f"model directory {directory} is missing {', '.join(problems.missing)} listed in its manifest"
        )
    if problems.mismatched:
        raise ModelRefError(
            f"model directory {directory} failed verification: sha256 mismatch for "
            f"{', '.join(problems.mismatched)}; the files were modified or truncated "
            "(delete the directory to rebuild it)"
        )
    return manifest
