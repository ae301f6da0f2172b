"""`chatloop flywheel --config FILE.yaml [--turn NAME] [--json]`: one turn of the data flywheel
(export -> train -> register -> gate -> canary), with a progress line per step on stderr.

Running the same `--turn` again continues it (finished steps are skipped). Without `--turn`, the
turn is named after the config file and today's date, so a re-run the same day resumes it.
"""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from chatloop.errors import ChatloopError, UsageError


def flywheel_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="Flywheel config (YAML).")],
    turn: Annotated[str | None, typer.Option("--turn", help="Turn name (default: CONFIG-DATE); an existing turn "
                                                            "is resumed.")] = None,
    db: Annotated[str | None, typer.Option("--db", help="Database URL (default: CHATLOOP_DATABASE_URL or SQLite in "
                                                       "CHATLOOP_HOME).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the turn's report as one JSON object.")] = False,
) -> None:
    """One turn of the flywheel: export feedback, train a candidate, register it, gate it, canary it."""
    from rich.console import Console

    from chatloop.config import get_settings
    from chatloop.flywheel.config import FlywheelConfig
    from chatloop.flywheel.turn import Turn
    from chatloop.registry.cli import actor
    from chatloop.registry.default import ensure_default
    from chatloop.store.db import Database, normalize_url
    from chatloop.train.config import load_config

    console = Console(stderr=True, highlight=False)
    try:
        cfg = load_config(FlywheelConfig, config)
        name = turn or f"{config.stem}-{datetime.now(UTC):%Y%m%d}"
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise UsageError(f"--turn must be letters, digits, '-', '_' or '.', not {name!r}")
        database = Database(normalize_url(db) if db else get_settings().db_url)
        ensure_default(database)
        runner = Turn(cfg, get_settings().home_dir / "flywheel" / name, database, actor=actor())
        with console.status("") as status:
            def on_step(step: str, state: str) -> None:
                if state == "running":
                    status.update(f"[bold]{step}[/] ...")
                else:
                    mark = {"done": "[green]✓[/]", "skipped": "[dim]↷ (done before)[/]", "stopped": "[yellow]■[/]"}
                    console.print(f"{mark[state]} {step}")

            result = runner.run(on_step)
    except ChatloopError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    console = Console(highlight=False)
    console.print(f"turn {result['turn']}: {result['model']} (stable {result['stable']})")
    if result["data"]:
        console.print(f"  data      {result['data']['rows']} {result['data']['kind']} rows, snapshot "
                      f"{(result['data']['snapshot'] or '')[:12]}")
    if result["stopped"]:
        console.print(f"  stopped   {result['stopped']}")
        return
    console.print(f"  candidate {result['candidate']}")
    gate = result["gate"]
    console.print(f"  gate      {'passed' if gate['passed'] else 'refused: ' + '; '.join(gate['reasons'])}")
    canary = result["canary"]
    console.print(f"  canary    {canary['event']['percent']}% of new conversations" if canary["started"]
                  else f"  canary    not started ({canary['reason']})")
    console.print(f"  promote with: chatloop models promote {result['candidate']}")
