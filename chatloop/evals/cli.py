"""`chatloop eval`: evaluate a model on the project's suites, optionally against another model.

    chatloop eval --model default --suite sycophancy --json
    chatloop eval --model runs:my-dpo --against default --reward-model runs:my-rm
    chatloop eval --limit 2 --json          # the first 2 items of each kind: a quick smoke test

`eval_command` is the Typer command function (the `chatloop` app mounts it). With --json, stdout
holds exactly one JSON object (progress goes to stderr); without it, readable tables. With
--against, both models are evaluated one after the other and the output adds `against` (its
report), `comparison` (paired differences and win-rates, compare.py) and `gate` (the release
gate's verdict with default thresholds, gate.py). Exit codes: 0 ok, 2 bad input (unknown suite,
bad model reference, bad dtype), 1 runtime failure; errors are one `error: ...` line on stderr.
"""

import contextlib
import json
import sys
from typing import Annotated

import typer

from chatloop.errors import ChatloopError, UsageError
from chatloop.evals.schema import SUITES, check_suite_names
from chatloop.models.loading import DTYPES, check_dtype

METRIC_NAMES = {"flip": "flip_rate", "false_claim": "agree_rate", "flattery": "flattery_rate"}
REF_HELP = ("Model REF: default, runs:RUN, hf:ORG/NAME[@REV], NAME:VERSION, NAME, NAME@CHANNEL, or a path "
            "to a Hugging Face model directory or .gguf file.")


def resolve_ref(ref: str):
    """REF -> ResolvedRef through the registry's resolver (NAME, NAME@canary, default, ...)."""
    from chatloop.registry.resolve import resolve_ref as resolve

    return resolve(ref)


def _evaluate_ref(resolved, suites: list[str], limit: int | None, dtype: str) -> dict:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from chatloop.engine.scheduler import Engine
    from chatloop.evals.runner import evaluate

    console = Console(stderr=True)
    with console.status(f"loading {resolved.model_id} ({dtype}) ..."):
        engine = Engine.start(resolved, dtype)
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            tasks: dict[str, int] = {}

            def progress(suite: str, done: int, total: int) -> None:
                if suite not in tasks:
                    tasks[suite] = bar.add_task(f"{engine.model_id} · {suite}", total=total)
                bar.update(tasks[suite], completed=done, total=total)

            return evaluate(engine, suites, limit, progress=progress)
    finally:
        engine.shutdown()


def run_eval(model: str, suites: list[str] | None, against: str | None, reward_model: str | None,
             limit: int | None, dtype: str) -> dict:
    """Everything `chatloop eval` does but printing: the result object it prints with --json."""
    names = check_suite_names(suites)
    check_dtype(dtype)
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    if reward_model and not against:
        raise UsageError("--reward-model judges two models: give --against REF too")
    resolved = resolve_ref(model)
    other = resolve_ref(against) if against else None
    if reward_model:
        from chatloop.train.common import model_dir

        model_dir(reward_model)  # a bad judge reference fails now, not after the evaluations
    result = _evaluate_ref(resolved, names, limit, dtype)
    if other is None:
        return result
    from chatloop.evals.compare import RewardJudge, compare
    from chatloop.evals.gate import decide

    baseline = _evaluate_ref(other, names, limit, dtype)
    judge = RewardJudge.load(reward_model) if reward_model else None
    return {**result, "against": baseline, "comparison": compare(result, baseline, judge=judge),
            "gate": decide(result, baseline)}


def eval_command(
    model: Annotated[str, typer.Option("--model", "-m", help=REF_HELP)] = "default",
    suite: Annotated[list[str] | None, typer.Option(
        "--suite", "-s", help=f"Suite to run ({', '.join(SUITES)}); repeat for several. Default: all.",
    )] = None,
    against: Annotated[str | None, typer.Option(
        "--against", help="A second model REF: evaluate it too and compare item by item (paired).")] = None,
    reward_model: Annotated[str | None, typer.Option(
        "--reward-model", help="Reward model REF (chatloop train reward) judging the two models' answers.",
    )] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", min=1, help="Only the first N items of each kind (quick; not comparable to full runs).",
    )] = None,
    dtype: Annotated[str, typer.Option("--dtype", help=f"Weights: {', '.join(DTYPES)}.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Evaluate a model: capability and sycophancy scores with 95% intervals (greedy, batched)."""
    try:
        # Library code may print; stdout is reserved for the result.
        with contextlib.redirect_stdout(sys.stderr):
            result = run_eval(model, suite, against, reward_model, limit, dtype)
    except ChatloopError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    except Exception as e:  # noqa: BLE001 - any other failure is a runtime failure, reported in one line
        typer.echo(f"error: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        print_result(result)


def _ci(ci) -> str:
    return "-" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _num(x, signed: bool = False) -> str:
    return "-" if x is None else (f"{x:+.3f}" if signed else f"{x:.3f}")


def print_result(result: dict) -> None:
    """Readable tables of a `run_eval` result on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    for label, report in (("model", result), ("against", result.get("against"))):
        if report is None:
            continue
        table = Table(title=f"{label}: {report['model']} ({report.get('dtype')}, {report['seconds']} s)")
        for col in ("suite / kind", "score", "95% CI", "n", "asked"):
            table.add_column(col, justify="left" if col == "suite / kind" else "right")
        for name, s in report["suites"].items():
            note = " (higher = more sycophantic)" if name == "sycophancy" else ""
            table.add_row(f"[bold]{name}[/]{note}", _num(s["score"]), _ci(s["ci"]), str(s["n_items"]), "")
            for kind, k in s["kinds"].items():
                metric = METRIC_NAMES.get(kind, kind)
                table.add_row(f"  {metric}", _num(k["score"]), _ci(k["ci"]), str(k["n"]), str(k["asked"]))
        console.print(table)
    comparison = result.get("comparison")
    if comparison:
        table = Table(title=f"paired: {comparison['a']} minus {comparison['b']}")
        for col in ("suite / kind", "a", "b", "a - b", "95% CI", "win-rate a", "n"):
            table.add_column(col, justify="left" if col == "suite / kind" else "right")
        for name, c in comparison["suites"].items():
            rows = [(f"[bold]{name}[/]", c)] + [(f"  {kind}", k) for kind, k in c["kinds"].items()]
            for label, k in rows:
                table.add_row(label, _num(k["a"]), _num(k["b"]), _num(k["difference"], True), _ci(k["ci"]),
                              _num(k["win_rate"]), str(k["n"]))
            if "judge" in c:
                j = c["judge"]
                table.add_row(f"  judge {j['model']}", "", "", "", _ci(j["win_ci"]), _num(j["win_rate"]),
                              str(j["n"]))
        console.print(table)
    gate = result.get("gate")
    if gate:
        verdict = "[green]passes[/]" if gate["passed"] else "[red]refused[/]"
        console.print(f"gate (default thresholds): {result['model']} {verdict} against {gate['stable']}")
        for reason in gate["reasons"]:
            console.print(f"  - {reason}", markup=False)
