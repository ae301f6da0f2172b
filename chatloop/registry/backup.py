"""`chatloop backup OUT` / `chatloop restore IN`: the database and the registry's artifacts in one
archive, taken while the server runs, restored only once every byte checks out.

    report = backup(Path("chatloop-2025-01-01.tar"), db_url)
    report = restore(Path("chatloop-2025-01-01.tar"), db_url, force=False)

The archive is a tar file (gzip-compressed when OUT ends in .gz or .tgz) whose first member,
`chatloop-backup.json`, lists every other member with its size and sha256, the database's kind,
Alembic revision and row counts, and the registered versions. Then come `database/chatloop.db`
(SQLite) or `database/chatloop.pgdump` (PostgreSQL's custom format), and
`models/NAME/VERSION/...`, the files of every version the database snapshot registers, each with
its own `manifest.json`. Uploaded images and documents live in the database, so it holds them.

Consistency: the database is copied at one instant (store/backup.py), and the artifacts copied
are those of the versions *that copy* registers. A version's files are written and published
before its row is committed and never change after, so every one the snapshot names is complete;
one registered later is simply not in this backup.

Restore reads the archive once, front to back, into a staging folder inside CHATLOOP_HOME,
checking each member against the list: an unlisted, altered or short member, or a missing one (a
truncated archive), is refused with its name before anything is touched. Each version is then
verified against its own manifest, the database is put back, the versions are moved into
`models/`, their recorded paths are pointed at this home, the schema is migrated to this
chatloop's newest, and the row counts are compared with those the backup recorded. A target
whose database holds any table, or whose `models/` already holds one of the archive's versions, is
refused unless `force` (then both are replaced; nothing else in the home is touched). Stop the
server on the target before restoring. Training runs (`runs/`), flywheel state and caches are not
part of a backup.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from sqlalchemy import update

from chatloop import __version__
from chatloop.config import get_settings
from chatloop.errors import ChatloopError, UsageError
from chatloop.fsutil import fsync_dir
from chatloop.models.manifest import model_id, verify_manifest
from chatloop.registry.artifacts import version_dir
from chatloop.store import backup as dbbackup
from chatloop.store.db import Database, normalize_url
from chatloop.store.models import ModelVersion

ARCHIVE_MANIFEST = "chatloop-backup.json"
FORMAT = 1
CHUNK = 1 << 20


class _Hashing(io.RawIOBase):
    """A file read through sha256 (what tarfile copies into the archive is what was hashed)."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.f.readinto(b)
        self.h.update(memoryview(b)[:n])
        self.n += n
        return n


def _sha256(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            n += len(block)
    return h.hexdigest(), n


def _version_files(row: dbbackup.VersionRow) -> list[tuple[str, Path]]:
    """(archive name, path) of every file of a registered version, checked against its manifest."""
    directory = Path(row.path)
    if not directory.is_dir():
        raise ChatloopError(f"the files of registered version {model_id(row.name, row.version)} are missing "
                            f"({directory}); a backup without them could not serve it")
    verify_manifest(directory)
    prefix = PurePosixPath("models", row.name, row.version)
    return [(str(prefix / p.relative_to(directory).as_posix()), p)
            for p in sorted(directory.rglob("*")) if p.is_file()]


def backup(out: Path, db_url: str) -> dict:
    """Write the backup archive `out` (a new file) of the database at `db_url` and its registry."""
    started = time.monotonic()
    url = normalize_url(db_url)
    out = out.expanduser().absolute()
    if out.exists():
        raise UsageError(f"{out} already exists; give the backup a new name")
    if not out.parent.is_dir():
        raise UsageError(f"no such directory: {out.parent}")
    mode = "w:gz" if out.name.endswith((".gz", ".tgz")) else "w"
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        snap = dbbackup.snapshot(url, Path(tmp))
        members = [(f"database/{snap.file.name}", snap.file)]
        for row in snap.versions:
            members += _version_files(row)
        files = {}
        for name, path in members:
            digest, size = _sha256(path)
            files[name] = {"sha256": digest, "size": size}
        manifest = {
            "format": FORMAT, "chatloop": __version__, "created_at": datetime.now(UTC).isoformat(),
            "database": {"kind": snap.kind, "file": members[0][0], "revision": snap.revision, "counts": snap.counts},
            "versions": [{"name": r.name, "version": r.version} for r in snap.versions],
            "files": files,
        }
        staged = Path(tmp) / "archive"
        with open(staged, "wb") as raw, tarfile.open(fileobj=raw, mode=mode, format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, ARCHIVE_MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
            for name, path in members:
                _add_file(tar, name, path, files[name])
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(staged, out)
        fsync_dir(out.parent)
    return {"path": str(out), "bytes": out.stat().st_size, "database": snap.kind, "revision": snap.revision,
            "counts": snap.counts, "versions": [model_id(r.name, r.version) for r in snap.versions],
            "files": len(files), "seconds": round(time.monotonic() - started, 2)}


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, int(time.time())
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path, expect: dict) -> None:
    with open(path, "rb") as f:
        reader = _Hashing(f)
        tar.addfile(_info(name, expect["size"]), io.BufferedReader(reader, CHUNK))
    if reader.h.hexdigest() != expect["sha256"]:
        raise ChatloopError(f"{path} changed while it was being backed up; run the backup again")


# --- restore ----------------------------------------------------------------------------------------

def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or path.parts[0] not in ("database", "models"):
        raise UsageError(f"the archive holds an unexpected member {name!r}; it is not a chatloop backup")
    return path


def _read_manifest(tar: tarfile.TarFile, source: Path) -> dict:
    first = tar.next()
    if first is None or first.name != ARCHIVE_MANIFEST or not first.isfile():
        raise UsageError(f"{source} is not a chatloop backup: it does not begin with {ARCHIVE_MANIFEST}")
    try:
        manifest = json.loads(tar.extractfile(first).read())
        files, database = manifest["files"], manifest["database"]
        if not isinstance(files, dict) or database["file"] not in files:
            raise KeyError("files")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise UsageError(f"{source}: {ARCHIVE_MANIFEST} is corrupt ({' '.join(str(e).split())})") from e
    if manifest.get("format") != FORMAT:
        raise UsageError(f"{source} is a backup of format {manifest.get('format')}; this chatloop reads {FORMAT}")
    return manifest


def _extract(tar: tarfile.TarFile, source: Path, files: dict, staging: Path) -> None:
    """Every listed member into `staging`, each checked as it is written; refuses anything else."""
    seen: set[str] = set()
    current = ARCHIVE_MANIFEST
    try:
        while (member := tar.next()) is not None:
            current = member.name
            if member.name not in files or member.name in seen or not member.isfile():
                raise UsageError(f"{source}: member {member.name} is not listed in {ARCHIVE_MANIFEST} (the archive "
                                 "was modified)")
            expect = files[member.name]
            dest = staging / _safe_name(member.name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            h, n = hashlib.sha256(), 0
            with tar.extractfile(member) as f, open(dest, "wb") as w:
                while block := f.read(CHUNK):
                    h.update(block)
                    n += len(block)
                    w.write(block)
            if n != expect["size"] or h.hexdigest() != expect["sha256"]:
                raise UsageError(f"{source}: {member.name} is damaged or was modified ({n} bytes, sha256 "
                                 f"{h.hexdigest()[:12]}…; the backup recorded {expect['size']} bytes, "
                                 f"{expect['sha256'][:12]}…)")
            seen.add(member.name)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise UsageError(f"{source} is truncated or damaged at {current}: {' '.join(str(e).split())}") from e
    missing = sorted(set(files) - seen)
    if missing:
        raise UsageError(f"{source} is truncated: {len(missing)} listed files are missing, first {missing[0]}")


def restore(source: Path, db_url: str, *, force: bool = False) -> dict:
    """Restore the backup `source` into the database at `db_url` and this CHATLOOP_HOME."""
    started = time.monotonic()
    url = normalize_url(db_url)
    source = source.expanduser().absolute()
    if not source.is_file():
        raise UsageError(f"no such backup: {source}")
    settings = get_settings()
    try:
        tar = tarfile.open(source, mode="r:*")  # noqa: SIM115 - closed by the `with` below
    except (tarfile.TarError, OSError) as e:
        raise UsageError(f"{source} is not a chatloop backup: not a tar archive (plain or compressed)") from e
    with tar:
        manifest = _read_manifest(tar, source)
        kind, versions = manifest["database"]["kind"], manifest["versions"]
        if dbbackup.backend(url) != kind:
            raise UsageError(f"{source} holds a {kind} database; restore it into a {kind} database, not {url}")
        taken = [model_id(v["name"], v["version"]) for v in versions if version_dir(v["name"], v["version"]).exists()]
        if not force:
            if not dbbackup.is_empty(url):
                raise UsageError("the target database is not empty; restore into a fresh home and database, or "
                                 "pass --force to replace it")
            if taken:
                raise UsageError(f"{settings.models_dir} already holds {', '.join(taken)}; pass --force to replace")
        settings.home_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=settings.home_dir, prefix=".restore-"))
        try:
            _extract(tar, source, manifest["files"], staging)
            for v in versions:
                verify_manifest(staging / "models" / v["name"] / v["version"])
            dbbackup.load(url, staging / manifest["database"]["file"], kind, force=force)
            for v in versions:
                final = version_dir(v["name"], v["version"])
                if final.exists():  # only with force: replaced by the backup's copy
                    shutil.rmtree(final)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / "models" / v["name"] / v["version"], final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    db = Database(url)  # migrates an older backup to this chatloop's schema
    try:
        with db.session() as s:
            for v in versions:
                where = (ModelVersion.name == v["name"], ModelVersion.version == v["version"])
                s.execute(update(ModelVersion).where(*where).values(path=str(version_dir(v["name"], v["version"]))))
    finally:
        db.dispose()
    found = dbbackup.counts(url)
    expected = manifest["database"]["counts"]
    wrong = {k: (n, found.get(k)) for k, n in expected.items() if found.get(k) != n}
    if wrong:
        raise ChatloopError(f"the restored database does not match the backup (table: expected, found): {wrong}")
    return {"path": str(source), "database": kind, "created_at": manifest.get("created_at"), "counts": found,
            "versions": [model_id(v["name"], v["version"]) for v in versions], "replaced": taken if force else [],
            "seconds": round(time.monotonic() - started, 2)}
