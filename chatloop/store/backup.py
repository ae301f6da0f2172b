"""A consistent copy of the database while it serves, and putting one back.

    snap = snapshot(url, workdir)        # SQLite: the online backup API; PostgreSQL: pg_dump
    snap.file, snap.counts, snap.versions
    load(url, snap.file, snap.kind, force=False)

The registry's backup archive (registry/backup.py, `chatloop backup OUT`) is built on these two.

A snapshot is one point in time: SQLite copies every page inside one read transaction (WAL mode
lets the server keep writing meanwhile); PostgreSQL opens a repeatable-read transaction, exports
its snapshot, and both `pg_dump --snapshot` and the counts and model versions read here see
exactly that state. So the registered versions a snapshot lists are the ones its database holds,
and the row counts it records are what a restore must find again.

`pg_dump`/`pg_restore` are found in /usr/lib/postgresql/MAJOR/bin (Debian's layout; the server's
major version or the nearest newer one) or on PATH, and run with argument lists only; the
password travels in PGPASSWORD, never on a command line.
"""

import os
import re
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import MetaData, create_engine, func, inspect, select, text
from sqlalchemy.engine import URL, Connection, make_url

from chatloop.errors import ChatloopError, UsageError
from chatloop.store.models import (
    ApiKey,
    Attachment,
    Comparison,
    Conversation,
    Correction,
    Document,
    Feedback,
    Message,
    ModelVersion,
    UsageRecord,
    User,
)

# What a restore must find again, row for row.
COUNTED = {"users": User, "api_keys": ApiKey, "conversations": Conversation, "messages": Message,
           "feedback": Feedback, "comparisons": Comparison, "corrections": Correction, "documents": Document,
           "attachments": Attachment, "usage": UsageRecord, "model_versions": ModelVersion}
PG_BIN = Path("/usr/lib/postgresql")


@dataclass(frozen=True)
class VersionRow:
    name: str
    version: str
    path: str


@dataclass
class Snapshot:
    kind: str  # "sqlite" or "postgresql"
    file: Path
    revision: str | None  # the Alembic revision the database was at
    counts: dict[str, int] = field(default_factory=dict)
    versions: list[VersionRow] = field(default_factory=list)


def backend(url: str) -> str:
    name = make_url(url).get_backend_name()
    if name not in ("sqlite", "postgresql"):
        raise UsageError(f"backups support SQLite and PostgreSQL databases, not {name}")
    return name


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise UsageError(f"{url} is an in-memory database: there is nothing on disk to back up or restore")
    return Path(database).expanduser()


def _read_state(conn: Connection) -> tuple[str | None, dict[str, int], list[VersionRow]]:
    tables = set(inspect(conn).get_table_names())
    revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar() \
        if "alembic_version" in tables else None
    counts = {name: conn.execute(select(func.count()).select_from(model)).scalar_one()
              for name, model in COUNTED.items() if model.__tablename__ in tables}
    versions = []
    if ModelVersion.__tablename__ in tables:
        rows = conn.execute(select(ModelVersion.name, ModelVersion.version, ModelVersion.path)
                            .order_by(ModelVersion.name, ModelVersion.version))
        versions = [VersionRow(*row) for row in rows]
    return revision, counts, versions


def counts(url: str) -> dict[str, int]:
    """The rows per counted table of a database (what a restore compares with the snapshot's)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return _read_state(conn)[1]
    finally:
        engine.dispose()


def is_empty(url: str) -> bool:
    """Whether the database holds no tables at all (a SQLite file that does not exist is empty)."""
    if backend(url) == "sqlite" and not sqlite_path(url).exists():
        return True
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return not inspect(conn).get_table_names()
    finally:
        engine.dispose()


# --- taking a snapshot ------------------------------------------------------------------------------

def snapshot(url: str, workdir: Path) -> Snapshot:
    """Copy the database into `workdir` at one instant, while others keep reading and writing it."""
    if backend(url) == "sqlite":
        return _sqlite_snapshot(url, workdir)
    return _pg_snapshot(url, workdir)


def _sqlite_snapshot(url: str, workdir: Path) -> Snapshot:
    source = sqlite_path(url)
    if not source.is_file():
        raise UsageError(f"no database at {source}")
    dest = workdir / "chatloop.db"
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(dest)
    try:
        src.execute("PRAGMA busy_timeout=30000")
        with dst:
            src.backup(dst)  # every page in one step: one read transaction, one consistent state
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        problems = dst.execute("PRAGMA quick_check").fetchall()
        if problems != [("ok",)]:
            raise ChatloopError(f"the copy of {source} fails SQLite's integrity check: {problems[:3]}")
    except sqlite3.Error as e:
        raise ChatloopError(f"cannot copy the SQLite database {source}: {e}") from e
    finally:
        src.close()
        dst.close()
    engine = create_engine(f"sqlite:///{dest}")
    try:
        with engine.connect() as conn:
            revision, n, versions = _read_state(conn)
    finally:
        engine.dispose()
    return Snapshot("sqlite", dest, revision, n, versions)


def _pg_snapshot(url: str, workdir: Path) -> Snapshot:
    dest = workdir / "chatloop.pgdump"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                snapshot_id = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
                revision, n, versions = _read_state(conn)
                major = int(conn.execute(text("SHOW server_version_num")).scalar_one()) // 10000
                # The exporting transaction stays open until pg_dump has taken the same snapshot.
                _run_pg("pg_dump", major, url, ["--format=custom", "--no-owner", "--no-privileges",
                                                f"--snapshot={snapshot_id}", f"--file={dest}"])
    except ChatloopError:
        raise
    except Exception as e:  # sqlalchemy/psycopg connection errors, told in one line
        raise ChatloopError(f"cannot snapshot the PostgreSQL database: {e}") from e
    finally:
        engine.dispose()
    return Snapshot("postgresql", dest, revision, n, versions)


# --- putting one back -------------------------------------------------------------------------------

def load(url: str, file: Path, kind: str, *, force: bool) -> None:
    """Make the database at `url` the snapshot `file` (of `kind`). A database that holds any table
    is replaced only with `force`. Run it with no server on that database."""
    target = backend(url)
    if target != kind:
        raise UsageError(f"this backup holds a {kind} database and cannot be restored into {target} ({url}); "
                         f"restore it with a {kind} database")
    if not force and not is_empty(url):
        raise UsageError("the target database is not empty; restore into a fresh one, or pass --force to replace it")
    if kind == "sqlite":
        dest = sqlite_path(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # A stale write-ahead log beside the new file would be replayed onto it: remove it first.
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{dest}{suffix}").unlink(missing_ok=True)
        staged = dest.with_name(f".{dest.name}.restore")
        shutil.copyfile(file, staged)
        os.replace(staged, dest)
        return
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            meta = MetaData()
            meta.reflect(conn)
            meta.drop_all(conn)
            major = int(conn.execute(text("SHOW server_version_num")).scalar_one()) // 10000
    finally:
        engine.dispose()
    _run_pg("pg_restore", major, url, ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
                                       str(file)])


def pg_tool(name: str, server_major: int) -> str:
    """The pg_dump/pg_restore for a server of `server_major`: that major's, else the nearest newer
    one installed, else the one on PATH."""
    found = {}
    for candidate in PG_BIN.glob(f"*/bin/{name}"):
        if re.fullmatch(r"\d+", candidate.parts[-3]) and os.access(candidate, os.X_OK):
            found[int(candidate.parts[-3])] = candidate
    newer = sorted(v for v in found if v >= server_major)
    if newer:
        return str(found[newer[0]])
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise ChatloopError(f"{name} not found (looked in {PG_BIN}/*/bin and on PATH): install the PostgreSQL "
                        f"client tools, version {server_major} or newer (Debian: postgresql-client-{server_major})")


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """(a libpq connection URI without the password, environment carrying the password)."""
    parsed: URL = make_url(url)
    env = {"PGPASSWORD": parsed.password} if parsed.password else {}
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run_pg(name: str, major: int, url: str, args: list[str]) -> None:
    uri, extra = libpq_target(url)
    argv = [pg_tool(name, major), f"--dbname={uri}", *args]
    proc = subprocess.run(argv, env={**os.environ, **extra}, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = " ".join(proc.stderr.strip().splitlines()[-3:]) or f"exit status {proc.returncode}"
        raise ChatloopError(f"{name} failed: {detail}")
