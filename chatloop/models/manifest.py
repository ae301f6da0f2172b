"""`manifest.json`: the identity of a model directory and the sha256 of every file in it.

A model directory written by chatloop (the converted default model, training outputs, registry
versions) carries a manifest; loading verifies it so that a truncated or tampered file is refused
instead of silently producing garbage. Every listed file must match its sha256, and every file a
loader would read (weights, configs, tokenizer, chat template) must be listed: a manifest edited to
drop an entry, or weights added beside it, are refused too. Other files (a README, notes) may be
added later. The manifest is a checksum, not a signature: whoever can rewrite the whole directory
can rewrite its manifest.
"""

import json
from pathlib import Path, PurePosixPath
from typing import Any

from chatloop.errors import ModelRefError
from chatloop.fsutil import atomic_write_text, digest_tree, verify_digests

MANIFEST = "manifest.json"
FORMAT = 1
# What transformers / tokenizers / GGUF readers may load from a model directory.
LOADED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".jinja", ".model", ".tiktoken",
                   ".py", ".msgpack", ".h5")
LOADED_NAMES = ("merges.txt", "vocab.txt")


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
    outside = [rel for rel in files if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts]
    if outside:
        raise ModelRefError(f"corrupt manifest {path}: it lists files outside its directory: {', '.join(outside)}")
    return manifest


def loaded_by_loaders(rel: str) -> bool:
    """Whether a file at `rel` (relative to a model directory) is one that loading may read."""
    name = PurePosixPath(rel).name
    return name.endswith(LOADED_SUFFIXES) or name in LOADED_NAMES


def model_id(name: str, version: str) -> str:
    """The exact version of a model, `name:version`: what answers a request, a run's `parent`."""
    return f"{name}:{version}"


def manifest_id(manifest: dict) -> str:
    """The `name:version` a manifest identifies its model by."""
    return model_id(manifest["name"], manifest["version"])


def verify_manifest(directory: Path) -> dict | None:
    """Check every file listed in the manifest against its sha256, and that it lists every file
    loading may read; other unlisted files are allowed."""
    manifest = read_manifest(directory)
    if manifest is None:
        return None
    problems = verify_digests(directory, manifest["files"], exclude=MANIFEST, strict=True)
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
    unlisted = [rel for rel in problems.unexpected if loaded_by_loaders(rel)]
    if unlisted:
        raise ModelRefError(
            f"model directory {directory} failed verification: {', '.join(unlisted)} not listed in its "
            "manifest; a model file added after the manifest was written (or a manifest edited to drop it) "
            "is not loaded unverified"
        )
    return manifest
