"""`chatloop models ...`: the registry on the command line (every command takes --json).

    chatloop models list                          names, their channels and versions
    chatloop models show REF                      one version: lineage, channels, evaluations, audit log
    chatloop models import PATH --name NAME       register a model directory, .gguf file or runs:RUN
    chatloop models promote NAME:VERSION          make it stable (after the evaluation gate)
    chatloop models canary NAME:VERSION --percent 10
    chatloop models rollback NAME                 undo the latest release of NAME
    chatloop models pull NAME | --list            download a catalog model, verify, convert, register
    chatloop backup OUT                           the database and every registered version, one archive
    chatloop restore IN [--force]                 put a backup back into this home (its database)

`backup_command` and `restore_command` are mounted on the top-level `chatloop` app. Release actions take effect in running servers within seconds (they poll the database).
"""

import getpass
import json
from pathlib import Path
from typing import Annotated

import typer

from chatloop.errors import ChatloopError, UsageError

models_app = typer.Typer(no_args_is_help=True, help="The model registry: versions, channels, releases.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
DbOpt = Annotated[str | None, typer.Option("--db", help="Database URL (default: CHATLOOP_DATABASE_URL or SQLite "
                                                       "in CHATLOOP_HOME).")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")]


def _fail(e: ChatloopError) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(e.exit_code)


def _db(url: str | None):
    from chatloop.config import get_settings
    from chatloop.registry.default import ensure_default
    from chatloop.store.db import Database, normalize_url

    db = Database(normalize_url(url) if url else get_settings().db_url)
    ensure_default(db)
    return db


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _emit(as_json: bool, data: dict, text: str) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False) if as_json else text)


def _version_of(s, ref: str) -> tuple[str, str]:
    """NAME:VERSION, or NAME@canary (the canary's version), as (name, version)."""
    from chatloop.models.refs import channel_ref
    from chatloop.registry.releases import CANARY, channels
    from chatloop.registry.versions import parse_id

    named = channel_ref(ref)
    if named and named[1] == CANARY:
        current = channels(s, named[0])
        if current.canary is None:
            raise UsageError(f"{named[0]} has no canary running")
        return named[0], current.canary
    if named:
        raise UsageError(f"'{ref}' names a channel; give the exact version NAME:VERSION")
    return parse_id(ref)


@models_app.command("list")
def list_models(as_json: JsonOpt = False, db: DbOpt = None) -> None:
    """Registered model names, their stable and canary versions, and every version."""
    from chatloop.registry.releases import channels
    from chatloop.registry.versions import list_versions, names

    try:
        with _db(db).session() as s:
            out = [{**channels(s, n).as_dict(), "versions": [v.version for v in list_versions(s, n)]}
                   for n in names(s)]
    except ChatloopError as e:
        _fail(e)
    lines = [f"{m['name']:<28} stable {m['stable'] or '-':<6} canary "
             + (f"{m['canary']} ({m['canary_percent']}%)" if m["canary"] else "-")
             + f"   versions {', '.join(m['versions'])}" for m in out]
    _emit(as_json, {"models": out}, "\n".join(lines) or "no registered models")


@models_app.command("show")
def show(ref: Annotated[str, typer.Argument(help="NAME (its stable version), NAME@canary, NAME:VERSION or "
                                                 "default (the bundled model's stable version).")],
         as_json: JsonOpt = False, db: DbOpt = None) -> None:
    """One version: lineage, the channels of its name, its evaluations and the name's audit log."""
    from chatloop.models.refs import DEFAULT_NAME, DEFAULT_REF, channel_ref
    from chatloop.registry.releases import channels, event_out, history
    from chatloop.registry.versions import get_version, version_out
    from chatloop.registry.evaluations import stored_results

    try:
        if ref.strip() == DEFAULT_REF:  # as every command takes it (_db registers it on first use)
            ref = DEFAULT_NAME
        with _db(db).session() as s:
            named = channel_ref(ref)
            if named and named[1] is None:
                stable = channels(s, named[0]).stable
                if stable is None:
                    raise UsageError(f"unknown model '{ref}': `chatloop models list` shows the registry")
                name, version = named[0], stable
            else:
                name, version = _version_of(s, ref)
            row = get_version(s, name, version)
            out = {**version_out(row), "channels": channels(s, name).as_dict(),
                   "evals": stored_results(s, row.name, row.version),
                   "events": [event_out(e) for e in history(s, name, limit=20)]}
    except ChatloopError as e:
        _fail(e)
    text = "\n".join([f"{out['id']}  ({out['path']})", f"parent {out['parent'] or '-'}  stage {out['stage'] or '-'}  "
                      f"data {out['data_hash'] or '-'}  source {out['source']}",
                      f"channels {json.dumps(out['channels'])}",
                      *[f"eval {e['suite']}: {_num(e['score'])} {_interval(e['ci'])} n={e['n']} ({e['settings']})"
                        for e in out["evals"]],
                      *[f"{e['at']}  {e['action']:<10} {e['version'] or ''} (was {e['previous'] or '-'}) "
                        f"by {e['actor']} {e['reason']}" for e in out["events"]]])
    _emit(as_json, out, text)


def _num(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _interval(ci) -> str:
    return "" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


@models_app.command("import")
def import_model(path: Annotated[str, typer.Argument(help="A Hugging Face model directory, a .gguf file or runs:RUN.")],
                 name: Annotated[str, typer.Option("--name", help="The model name to register it under.")],
                 as_json: JsonOpt = False, db: DbOpt = None) -> None:
    """Register a model as the next version of NAME (lineage from its manifest)."""
    from chatloop.registry.versions import import_ref, version_out

    try:
        database = _db(db)
        with database.session() as s:
            out = version_out(import_ref(s, path, name, actor=actor()))
    except ChatloopError as e:
        _fail(e)
    _emit(as_json, out, f"registered {out['id']}")


@models_app.command("promote")
def promote(ref: Annotated[str, typer.Argument(help="NAME:VERSION (or NAME@canary) to make stable.")],
            force: Annotated[bool, typer.Option("--force", help="Skip the evaluation gate (needs --reason).")] = False,
            reason: ReasonOpt = "", limit: Annotated[int | None, typer.Option(
                "--limit", min=1, help="Evaluate only the first N items of each kind (faster, less certain).")] = None,
            dtype: Annotated[str, typer.Option(
                "--dtype", help="Weights for the evaluation (float32: the same answers on every CPU).")] = "float32",
            as_json: JsonOpt = False, db: DbOpt = None) -> None:
    """Make a version stable, if the evaluation gate passes: no significant capability drop and no
    significant rise in sycophancy against the current stable version."""
    from chatloop.registry import releases
    from chatloop.registry.evaluations import run_gate

    try:
        if force and not reason.strip():
            raise UsageError("--force needs --reason TEXT (it is kept in the audit log)")
        database = _db(db)
        with database.session() as s:
            name, version = _version_of(s, ref)
            stable = releases.channels(s, name).stable
        gate = None
        if not force and stable is not None:
            gate = run_gate(database, name, version, stable, dtype=dtype, limit=limit)
            if not gate["passed"]:
                _emit(as_json, {"promoted": False, "gate": gate},
                      f"refused: {'; '.join(gate['reasons'])} (use --force --reason TEXT to override)")
                raise typer.Exit(1)
        with database.session() as s:
            event = releases.promote(s, name, version, actor=actor(),
                                     reason=(f"forced: {reason}" if force else reason))
            out = {"promoted": True, "gate": gate, "event": releases.event_out(event)}
    except ChatloopError as e:
        _fail(e)
    _emit(as_json, out, f"{name}:{version} is stable (was {out['event']['previous'] or '-'})")


@models_app.command("canary")
def canary(ref: Annotated[str, typer.Argument(help="NAME:VERSION to try on a share of new conversations.")],
           percent: Annotated[int, typer.Option("--percent", help="Share of new conversations, 1-100.")],
           reason: ReasonOpt = "", as_json: JsonOpt = False, db: DbOpt = None) -> None:
    """Start (or change) a canary: that share of new conversations gets this version."""
    from chatloop.registry import releases
    from chatloop.registry.versions import parse_id

    try:
        name, version = parse_id(ref)
        with _db(db).session() as s:
            out = releases.event_out(releases.set_canary(s, name, version, percent, actor=actor(), reason=reason))
    except ChatloopError as e:
        _fail(e)
    _emit(as_json, out, f"{name}:{version} is the canary for {percent}% of new conversations")


@models_app.command("rollback")
def rollback(name: Annotated[str, typer.Argument(help="The model name.")], reason: ReasonOpt = "",
             as_json: JsonOpt = False, db: DbOpt = None) -> None:
    """Undo the latest release of NAME: end its canary if one runs, else restore the previous stable."""
    from chatloop.registry import releases

    try:
        with _db(db).session() as s:
            out = releases.event_out(releases.rollback(s, name, actor=actor(), reason=reason))
    except ChatloopError as e:
        _fail(e)
    what = "canary ended" if out["action"] == "end-canary" else f"stable is {name}:{out['version']} again"
    _emit(as_json, out, f"{what} (was {name}:{out['previous']})")


def _bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.0f} MB"


def _download_progress(enabled: bool):
    """A rich progress bar per piece on stderr (a no-op when stderr is not a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    console=Console(stderr=True), disable=not enabled)

    def start(description: str, total: int):
        task = bars.add_task(description, total=total)
        return lambda n: bars.advance(task, n)

    return bars, start


@models_app.command("pull")
def pull(name: Annotated[str | None, typer.Argument(help="A name from the catalog (see --list).")] = None,
         list_: Annotated[bool, typer.Option("--list", help="Show what can be pulled, with sizes and licences.")]
         = False, as_json: JsonOpt = False, db: DbOpt = None) -> None:
    """Download a catalog model, verify every piece, convert it once and register it as a version."""
    from chatloop.registry.catalog import catalog_entry, load_catalog
    from chatloop.registry.pull import pull as pull_model
    from chatloop.registry.versions import version_out

    try:
        if list_:
            rows = [e.summary() for e in load_catalog().models]
            _emit(as_json, {"models": rows}, "\n".join(
                f"{r['name']:<30} {r['params']:>5}  {','.join(r['languages']):<24} {r['licence']:<11} "
                f"download {_bytes(r['download_bytes'])}  ({r['source']}) {r['title']}" for r in rows))
            return
        if not name:
            raise UsageError("give a model name, or --list to see the catalog")
        entry = catalog_entry(name)
        bars, start = _download_progress(not as_json)
        with bars:
            row, new = pull_model(entry, _db(db), actor=actor(), progress=start,
                                  converting=lambda: bars.console.print("verified; converting once (about a "
                                                                        "minute)…"))
        out = {**version_out(row), "pulled": new}
    except ChatloopError as e:
        _fail(e)
    _emit(as_json, out, f"{'pulled' if new else 'already pulled:'} {out['id']} ({out['path']})"
          + ("" if not new else f"; serve it with `chatloop serve --model {row.name}`"))


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _summary(counts: dict) -> str:
    keys = ("users", "api_keys", "conversations", "messages", "feedback", "documents", "attachments")
    return ", ".join(f"{counts.get(k, 0)} {k.replace('_', ' ')}" for k in keys)


def backup_command(out: Annotated[Path, typer.Argument(help="The archive to write (a new file; .tar, or "
                                                           ".tar.gz to compress).")],
                   as_json: JsonOpt = False, db: DbOpt = None) -> None:
    """Back up the database and every registered model version into one archive, while serving.

    SQLite is copied with its online backup API, PostgreSQL with pg_dump; every member's sha256 is listed.
    """
    from chatloop.config import get_settings
    from chatloop.registry.backup import backup

    try:
        report = backup(out, normalize(db) if db else get_settings().db_url)
    except ChatloopError as e:
        _fail(e)
    _emit(as_json, report, f"backed up {_summary(report['counts'])} and {len(report['versions'])} model versions "
                           f"({', '.join(report['versions']) or 'none'}) to {report['path']} "
                           f"({_size(report['bytes'])}, {report['seconds']} s)")


def restore_command(source: Annotated[Path, typer.Argument(metavar="IN", help="An archive `chatloop backup` "
                                                                             "wrote.")],
                    force: Annotated[bool, typer.Option("--force", help="Replace a database that is not empty "
                                                                        "and model versions already present.")]
                    = False, as_json: JsonOpt = False, db: DbOpt = None) -> None:
    """Restore a backup into this CHATLOOP_HOME and its database (stop the server there first).

    Every file is checked against the archive's sha256 list and each model against its manifest
    first; a home that already holds data is refused unless --force.
    """
    from chatloop.config import get_settings
    from chatloop.registry.backup import restore

    try:
        report = restore(source, normalize(db) if db else get_settings().db_url, force=force)
    except ChatloopError as e:
        _fail(e)
    _emit(as_json, report, f"restored {_summary(report['counts'])} and {len(report['versions'])} model versions "
                           f"from {report['path']} (taken {report['created_at']}) in {report['seconds']} s")


def normalize(url: str) -> str:
    from chatloop.store.db import normalize_url

    return normalize_url(url)
