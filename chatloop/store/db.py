"""Database connection: create the SQLAlchemy engine, migrate to the newest schema, open sessions.

    db = Database(get_settings().db_url)   # sqlite:///... (WAL) or postgresql+psycopg://...
    with db.session() as s: ...

`Database` runs `alembic upgrade head` on start, so a fresh or an old database always has the
current schema; the migrations are the only way the schema changes.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from chatloop.errors import UsageError

MIGRATIONS = Path(__file__).with_name("migrations")


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
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        s = self._sessions()
        try:
            yield s
            s.commit()
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
