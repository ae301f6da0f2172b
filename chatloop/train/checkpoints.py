"""Crash-safe training checkpoints (DESIGN.md training rules).

A checkpoint is written into a temporary sibling directory, sealed with a completion marker that
lists the sha256 of every file (written last), fsynced, then atomically renamed to
`checkpoints/step-NNNNNNNN/`. A `kill -9` at any instant therefore leaves either the previous
checkpoints untouched or a new complete one, plus at most a stray `.step-*.tmp-*` directory that the
next run deletes. Resuming picks the newest complete checkpoint and verifies every digest; a
mismatch (a tampered or corrupted file) is refused with a message naming the files.

    path = save_checkpoint(root, step, lambda tmp: write_files_into(tmp), keep=2)
    path = latest_checkpoint(root)      # verified, or None when there is none
"""

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from chatloop.errors import UsageError
from chatloop.fsutil import atomic_write_text, publish_dir, sha256_file, staging_dir

MARKER = "COMPLETE.json"
_NAME = re.compile(r"^step-(\d{8})$")


class CheckpointError(UsageError):
    """A checkpoint that cannot be trusted (tampered, truncated, unreadable)."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def seal(directory: Path, step: int) -> dict:
    """Write the completion marker: the sha256 of every other file. Must be the last write."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MARKER)
    marker = {"step": step, "files": {str(p.relative_to(directory)): sha256_file(p) for p in files}}
    atomic_write_text(directory / MARKER, json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return marker


def clean_staging(root: Path) -> None:
    """Delete temporary directories left behind by a save that was killed half-way."""
    if root.is_dir():
        for stray in root.glob(".step-*.tmp-*"):
            shutil.rmtree(stray)


def save_checkpoint(root: Path, step: int, write: Callable[[Path], None], keep: int) -> Path:
    """Call `write(tmp)` to fill a staging directory, seal it, publish it atomically, prune old ones."""
    final = root / checkpoint_name(step)
    tmp = staging_dir(final)
    try:
        write(tmp)
        seal(tmp, step)
        if not publish_dir(tmp, final):
            raise CheckpointError(f"checkpoint {final} already exists; another process writes to this run")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    prune(root, keep)
    return final


def complete_checkpoints(root: Path) -> list[Path]:
    """Published checkpoints that carry a completion marker, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / MARKER).is_file()]
    return sorted(found, key=lambda p: p.name)


def prune(root: Path, keep: int) -> None:
    for old in complete_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)


def verify_checkpoint(path: Path) -> dict:
    """Check every file against the marker; raises CheckpointError naming what is wrong."""
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
        listed = marker["files"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} has an unreadable completion marker: {e}") from e
    missing = [rel for rel in listed if not (path / rel).is_file()]
    bad = [rel for rel in listed if rel not in missing and sha256_file(path / rel) != listed[rel]]
    extra = [
        str(p.relative_to(path)) for p in path.rglob("*")
        if p.is_file() and p.name != MARKER and str(p.relative_to(path)) not in listed
    ]
    if missing or bad or extra:
        problems = [f"{kind}: {', '.join(names)}" for kind, names in
                    (("missing", missing), ("sha256 mismatch", bad), ("unexpected files", extra)) if names]
        raise CheckpointError(
            f"refusing to resume from {path}: it fails verification ({'; '.join(problems)}); the files were "
            "modified after the checkpoint was sealed. Delete this checkpoint to resume from an older one, "
            "or start the run again without --resume"
        )
    return marker


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint, verified; None when the run has none yet."""
    found = complete_checkpoints(root)
    if not found:
        return None
    verify_checkpoint(found[-1])
    return found[-1]
