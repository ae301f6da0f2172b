"""Crash-safe filesystem helpers and sha256 digests of directory trees.

Writes go to a temporary sibling, are fsynced, then atomically renamed, so that a reader of a model
cache, a training checkpoint or a run's `final/` never sees a half-written directory: it either
does not exist yet or is complete. `digest_tree` and `verify_digests` are the one implementation of
the `{relative path: sha256}` maps behind model manifests and checkpoint completion markers.
`reporting_full_disk` turns a write that failed on a full filesystem into one clear StorageFull.
"""

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from chatloop.errors import ChatloopError, StorageFull

HASH_WORKERS = 4
# Writers that hide the errno (torch.save reports "unexpected pos ..."): a failure with less than
# this left on the filesystem is taken to be the disk filling up.
NEARLY_FULL = 1 << 20


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _sha256_files(directory: Path, rels: list[str]) -> dict[str, str]:
    """{rel: sha256} of `directory / rel` for each rel; hashlib releases the GIL, so threads help."""
    with ThreadPoolExecutor(max_workers=HASH_WORKERS) as pool:
        return dict(zip(rels, pool.map(lambda rel: sha256_file(directory / rel), rels)))


def _tree_files(directory: Path, exclude: str) -> list[str]:
    """Relative paths of every file under `directory`, sorted, except files named `exclude`."""
    files = (p for p in directory.rglob("*") if p.is_file() and p.name != exclude)
    return sorted(str(p.relative_to(directory)) for p in files)


def digest_tree(directory: Path, exclude: str) -> dict[str, str]:
    """{relative path: sha256} of every file under `directory` except those named `exclude` (the
    manifest or marker that is to hold these digests)."""
    return _sha256_files(directory, _tree_files(directory, exclude))


@dataclass(frozen=True)
class DigestProblems:
    """What `verify_digests` found wrong; false when nothing is."""

    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.mismatched or self.unexpected)


def verify_digests(directory: Path, listed: dict[str, str], *, exclude: str, strict: bool) -> DigestProblems:
    """Compare the files under `directory` with `listed` ({relative path: sha256}, as digest_tree
    makes). `strict` also reports files that are not listed; the marker file `exclude` never counts."""
    present = [rel for rel in listed if (directory / rel).is_file()]
    actual = _sha256_files(directory, present)
    missing = [rel for rel in listed if rel not in actual]
    mismatched = [rel for rel in present if actual[rel] != listed[rel]]
    unexpected = [rel for rel in _tree_files(directory, exclude) if rel not in listed] if strict else []
    return DigestProblems(missing, mismatched, unexpected)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(dirpath))


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def staging_dir(final: Path) -> Path:
    """A fresh temporary directory beside `final` (same filesystem, so rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; published directories are ordinary ones
    return tmp


def publish_dir(tmp: Path, final: Path) -> bool:
    """fsync `tmp` and rename it to `final`. Returns False (and removes tmp) if another writer won."""
    fsync_tree(tmp)
    try:
        os.rename(tmp, final)
    except OSError:
        if final.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        raise
    fsync_dir(final.parent)
    return True


def out_of_space(exc: BaseException, path: Path) -> bool:
    """Whether `exc`, raised while writing under `path`, means that its filesystem is full: ENOSPC or
    EDQUOT anywhere in the exception's chain, or almost no space left there now."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(seen) or "os error 28" in str(seen):  # safetensors' Rust errors
            return True
        seen = seen.__cause__ or seen.__context__
    return free_bytes(path) < NEARLY_FULL


def free_bytes(path: Path) -> int:
    """Bytes available on the filesystem holding `path` (its nearest existing ancestor)."""
    for candidate in (path, *path.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(candidate).free
    return 0


@contextlib.contextmanager
def reporting_full_disk(path: Path, doing: str, hint: str = "free some space and try again") -> Iterator[None]:
    """Re-raise a failure inside the block that came from the filesystem under `path` filling up as
    StorageFull: "no space left on device while DOING (N MiB free on PATH's filesystem); HINT"."""
    try:
        yield
    except ChatloopError:
        raise
    except Exception as e:
        if not out_of_space(e, path):
            raise
        free = free_bytes(path) / (1 << 20)
        raise StorageFull(
            f"no space left on device while {doing} ({free:.1f} MiB free on the filesystem of {path}); {hint}"
        ) from e
