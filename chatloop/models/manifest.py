"""`manifest.json`: the identity of a model directory and the sha256 of every file in it.

A model directory written by chatloop (the converted default model, training outputs, registry
versions) carries a manifest; loading verifies it so that a truncated or tampered file is refused
instead of silently producing garbage.
"""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from chatloop.errors import ModelRefError
from chatloop.fsutil import atomic_write_text, sha256_file

MANIFEST = "manifest.json"
FORMAT = 1


def write_manifest(directory: Path, *, name: str, version: str, **extra: Any) -> dict:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "files": {str(p.relative_to(directory)): sha256_file(p) for p in files},
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


def verify_manifest(directory: Path) -> dict | None:
    """Check every file listed in the manifest against its sha256 (files hashed in parallel)."""
    manifest = read_manifest(directory)
    if manifest is None:
        return None
    listed = manifest["files"]
    for rel in listed:
        if not (directory / rel).is_file():
            raise ModelRefError(f"model directory {directory} is missing {rel} listed in its manifest")
    with ThreadPoolExecutor(max_workers=4) as pool:
        actual = dict(zip(listed, pool.map(lambda rel: sha256_file(directory / rel), listed)))
    bad = [rel for rel, digest in listed.items() if actual[rel] != digest]
    if bad:
        raise ModelRefError(
            f"model directory {directory} failed verification: sha256 mismatch for {', '.join(bad)}; "
            "the files were modified or truncated (delete the directory to rebuild it)"
        )
    return manifest
