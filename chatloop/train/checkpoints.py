"""Crash-safe training checkpoints (docs/architecture.md, "Training rules").

A checkpoint is written into a temporary sibling directory, sealed with a completion marker that
lists the sha256 of every file (written last), fsynced, then atomically renamed to
`checkpoints/step-NNNNNNNN/`. A `kill -9` at any instant therefore leaves either the previous
checkpoints untouched or a new complete one, plus at most a stray `.step-*.tmp-*` directory that the
next run deletes. A save that fills the disk removes its staging directory and raises StorageFull
(exit 1) naming the checkpoint; the older checkpoints are untouched, so `--resume` continues from
the newest of them once there is space again. Resuming picks the newest complete checkpoint and
verifies every digest; a mismatch (a tampered or corrupted file) is refused with a message naming
the files and the older checkpoint that still verifies, if any.

    path = save_checkpoint(root, step, lambda tmp: write_files_into(tmp), keep=2)
    path = latest_checkpoint(root)      # verified, or None when there is none
"""

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from chatloop.errors import UsageError
from chatloop.fsutil import (
    atomic_write_text, digest_tree, publish_dir, reporting_full_disk, staging_dir, verify_digests,
)

MARKER = "COMPLETE.json"
_NAME = re.compile(r"^step-(\d{8})$")


class CheckpointError(UsageError):
    """A checkpoint that cannot be trusted (tampered, truncated, unreadable)."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def seal(directory: Path, step: int) -> dict:
    """Write the completion marker: the sha256 of every other file. Must be the last write."""
    marker = {"step": step, "files": digest_tree(directory, exclude=MARKER)}
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
    previous = complete_checkpoints(root)
    hint = (f"the previous checkpoint {previous[-1]} is intact: free some space, then rerun with --resume"
            if previous else "there is no earlier checkpoint: free some space, then rerun with --resume")
    tmp = None
    try:
        with reporting_full_disk(root, f"saving checkpoint {final}", hint):
            tmp = staging_dir(final)
            write(tmp)
            seal(tmp, step)
            if not publish_dir(tmp, final):
                raise CheckpointError(f"checkpoint {final} already exists; another process writes to this run")
    finally:
        if tmp is not None and tmp.exists():
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


def _read_marker(path: Path) -> dict:
    """The completion marker of checkpoint `path`; raises CheckpointError when it cannot be read."""
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} has an unreadable completion marker: {e}") from e
    files = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise CheckpointError(f"checkpoint {path} has an unreadable completion marker: no 'files' map")
    return marker


def verify_checkpoint(path: Path) -> dict:
    """Check every file against the marker (unlisted files are refused too); raises CheckpointError
    naming what is wrong."""
    marker = _read_marker(path)
    problems = verify_digests(path, marker["files"], exclude=MARKER, strict=True)
    if problems:
        found = [f"{kind}: {', '.join(names)}" for kind, names in (
            ("missing", problems.missing), ("sha256 mismatch", problems.mismatched),
            ("unexpected files", problems.unexpected)) if names]
        raise CheckpointError(
            f"refusing to resume from {path}: it fails verification ({'; '.join(found)}); the files were "
            "modified after the checkpoint was sealed"
        )
    return marker


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint, verified; None when the run has none yet. A newest one that
    fails verification is refused rather than skipped (a corrupted or tampered checkpoint is worth a
    look before work is thrown away); the message names the older checkpoint that still verifies."""
    found = complete_checkpoints(root)
    if not found:
        return None
    try:
        verify_checkpoint(found[-1])
    except CheckpointError as e:
        older = next((c for c in reversed(found[:-1]) if _verifies(c)), None)
        advice = (f"{older.name} still verifies: delete {found[-1]} to resume from it" if older
                  else "no older checkpoint verifies") + ", or start the run again without --resume"
        raise CheckpointError(f"{e}; {advice}") from None
    return found[-1]


def _verifies(path: Path) -> bool:
    try:
        verify_checkpoint(path)
        return True
    except CheckpointError:
        return False
