"""`chatloop data export --kind {sft,pairs,kto} --out FILE.jsonl [--since DATE] [--until DATE]
[--model-version V ...] [--db URL] [--json]`: users' feedback as a training dataset (export.py).

`--json` prints one object: {"kind", "out", "rows", "snapshot", "skipped", "scrubbed", "since",
"until", "model_versions"}. Exit codes: 0 ok, 2 bad input (one `error: ...` line on stderr),
1 runtime failure (the database or the file could not be used).
"""

import json
from pathlib import Path
from typing import Annotated

import typer

from chatloop.errors import ChatloopError, UsageError

data_app = typer.Typer(no_args_is_help=True, add_completion=False,
                       help="Datasets: export users' feedback as training data.")


@data_app.callback()
def _data() -> None:
    """Datasets: export users' feedback as training data."""


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _open(db: str | None):
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from chatloop.config import get_settings
    from chatloop.store.db import Database, normalize_url

    url = normalize_url(db or get_settings().db_url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database).expanduser()
        if not path.is_file():
            raise UsageError(f"no database at {path}")  # an export never creates an empty one
    try:
        return Database(url)
    except (ArgumentError, NoSuchModuleError) as e:  # raised before connecting: the URL itself is wrong
        raise UsageError(f"invalid database URL {url!r}: {e}") from e


def _summary(report: dict) -> str:
    def counts(d: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items() if v) or "none"

    window = f"{report['since'] or 'the start'} to {report['until'] or 'now'}"
    versions = ", ".join(report["model_versions"]) or "all"
    return "\n".join([
        f"exported {report['rows']} {report['kind']} rows to {report['out']}",
        f"snapshot sha256: {report['snapshot']}",
        f"feedback given: {window}; model versions: {versions}",
        f"skipped: {counts(report['skipped'])}",
        f"scrubbed: {counts(report['scrubbed'])}",
    ])


KIND_HELP = "sft (corrections and thumbed-up answers), pairs (comparisons and votes) or kto (thumbs)."
SINCE_HELP = "Feedback given from this date (YYYY-MM-DD) or ISO timestamp on (UTC unless zoned)."
UNTIL_HELP = "Feedback given before this ISO timestamp; a date (YYYY-MM-DD) includes that whole day."
VERSION_HELP = ("Only answers of this model version (NAME:VERSION, or NAME for all its versions); "
                "repeatable. A pair matches if either of its answers does.")
OUT_HELP = "The JSONL file to write (atomically)."
DB_HELP = "Database URL (default: CHATLOOP_DATABASE_URL or SQLite in CHATLOOP_HOME)."


@data_app.command("export")
def export_command(
    kind: Annotated[str | None, typer.Option("--kind", metavar="sft|pairs|kto", help=KIND_HELP)] = None,
    out: Annotated[Path | None, typer.Option("--out", metavar="FILE.jsonl", help=OUT_HELP)] = None,
    since: Annotated[str | None, typer.Option("--since", metavar="DATE", help=SINCE_HELP)] = None,
    until: Annotated[str | None, typer.Option("--until", metavar="DATE", help=UNTIL_HELP)] = None,
    model_version: Annotated[list[str] | None,
                             typer.Option("--model-version", metavar="V", help=VERSION_HELP)] = None,
    db: Annotated[str | None, typer.Option("--db", metavar="URL", help=DB_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Export feedback of users who allow training as a scrubbed JSONL dataset with a sha256 snapshot."""
    from sqlalchemy.exc import SQLAlchemyError

    from chatloop.data.export import KINDS, export_file, parse_when

    database = None
    try:
        if kind not in KINDS:
            given = f", not {kind!r}" if kind else ""
            raise UsageError(f"--kind must be one of {', '.join(KINDS)}{given}")
        if out is None:
            raise UsageError("--out FILE.jsonl is required")
        start = parse_when(since, option="--since") if since else None
        end = parse_when(until, end=True, option="--until") if until else None
        if start is not None and end is not None and start >= end:
            raise UsageError("--since must be before --until")
        database = _open(db)
        with database.session() as s:
            report = export_file(s, kind, out, start, end, model_version).as_dict()
    except ChatloopError as e:
        _fail(str(e), e.exit_code)
    except (SQLAlchemyError, OSError) as e:
        _fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, 1)
    finally:
        if database is not None:
            database.dispose()
    typer.echo(json.dumps(report, ensure_ascii=False) if as_json else _summary(report))
