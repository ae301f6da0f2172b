"""Database connection: create the SQLAlchemy engine, migrate to the newest schema, open sessions.

    db = Database(get_settings().db_url)   # sqlite:///... (WAL) or postgresql+psycopg://...
    with db.session() as s: ...

`Database` runs `alembic upgrade head` on start, so a fresh or an old database always has the
current schema; the migrations are the only way the schema changes.

A database that cannot be reached (PostgreSQL restarting or down, SQLite locked past its busy
timeout) makes a session raise `DatabaseUnavailable`, which the server answers with 503 and
`Retry-After` instead of a 500. Connections are checked before use (`pool_pre_ping`), so once the
database is back the next request gets a fresh connection: no restart needed. PostgreSQL
connections give up after `CONNECT_TIMEOUT` seconds rather than hanging on an unreachable host.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from chatloop.errors import DatabaseUnavailable, UsageError

MIGRATIONS = Path(__file__).with_name("migrations")
CONNECT_TIMEOUT = 5
log = logging.getLogger(__name__)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def normalize_url(url: str) -> str:
    """Accept plain postgresql:// URLs and use psycopg 3 for them."""
    try:
        parsed = make_url(url)
    except Exception as e:  # sqlalchemy raises ArgumentError for malformed URLs
        raise UsageError(f"invalid database URL {url!r}: {e}") from e
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


class Database:
    def __init__(self, url: str, migrate: bool = True):
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        kwargs: dict = {"pool_pre_ping": True}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        elif parsed.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
        self.engine = create_engine(self.url, **kwargs)
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            self.migrate()

    def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection_url"] = self.url
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except (OperationalError, InterfaceError) as e:  # unreachable, refused, locked, read-only, ...
            where = make_url(self.url).render_as_string(hide_password=True)
            reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
            raise DatabaseUnavailable(f"cannot use the database {where}: {reason}") from e

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        s = self._sessions()
        try:
            yield s
            s.commit()
        except (OperationalError, InterfaceError, PoolTimeout) as e:
            _quiet_rollback(s)
            if isinstance(e, DBAPIError) and not _is_outage(e):
                raise
            log.warning("database unavailable: %s", e.orig if isinstance(e, DBAPIError) else e)
            raise DatabaseUnavailable("the database is unavailable right now; retry shortly") from e
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def mark_interrupted(self) -> int:
        """Answers left `streaming` by a crash become `interrupted` (run at server start)."""
        from chatloop.store.models import Message

        with self.session() as s:
            result = s.execute(update(Message).where(Message.status == "streaming").values(status="interrupted"))
            return result.rowcount or 0

    def dispose(self) -> None:
        self.engine.dispose()


def _is_outage(e: DBAPIError) -> bool:
    """Whether an error says the database cannot serve now, rather than that a statement was wrong."""
    if e.connection_invalidated or isinstance(e, InterfaceError):
        return True
    state = getattr(e.orig, "sqlstate", None)  # PostgreSQL's SQLSTATE
    if state is not None:  # 08 connection exception, 53 insufficient resources, 57 shutting down / starting
        return state[:2] in ("08", "53", "57")
    name = getattr(e.orig, "sqlite_errorname", None)
    if name is not None:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    return True  # a failure to connect at all (refused, reset, timed out) carries no SQLSTATE


def _quiet_rollback(s: Session) -> None:
    try:
        s.rollback()
    except DBAPIError:  # the connection is gone; the pool discards it
        log.debug("rollback on a dead connection failed", exc_info=True)
