"""`chatloop train STAGE --config FILE.yaml [--out RUN_DIR] [--resume] [--set key=value ...]`.

Each stage is a module in chatloop.train with a `Config` (pydantic, help on every field) and
`run(cfg, run_dir, resume) -> dict`; this command loads the YAML, applies overrides, runs the stage
and prints a summary (one JSON object with --json). `--help-config` lists a stage's fields.
"""

import contextlib
import importlib
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from chatloop.errors import ChatloopError, UsageError

# stage -> (module, config class)
STAGES = {
    "tokenizer": ("chatloop.train.tokenizer", "TokenizerConfig"),
    "pretrain": ("chatloop.train.pretrain", "PretrainConfig"),
    "sft": ("chatloop.train.sft", "SFTStageConfig"),
    "reward": ("chatloop.train.reward", "RewardStageConfig"),
    "dpo": ("chatloop.train.dpo", "DPOStageConfig"),
    "kto": ("chatloop.train.kto", "KTOStageConfig"),
    "grpo": ("chatloop.train.grpo", "GRPOStageConfig"),
}

Stage = Enum("Stage", {name: name for name in STAGES}, type=str)


def train(
    stage: Annotated[Stage, typer.Argument(help="Which stage to run.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Stage config (YAML).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory (default CHATLOOP_HOME/runs/RUN_NAME).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest verified checkpoint.")] = False,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a config field: key=value.")] = None,
    help_config: Annotated[bool, typer.Option("--help-config", help="List the stage's config fields.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    register: Annotated[str | None, typer.Option(
        "--register", help="Register the run's final model as the next version of this model name.")] = None,
) -> None:
    """Train one stage of the pipeline (tokenizer, pretrain, sft, reward, dpo, kto, grpo)."""
    from chatloop.config import get_settings
    from chatloop.fsutil import reporting_full_disk
    from chatloop.train.config import describe, load_config

    module_name, class_name = STAGES[stage.value]
    module = importlib.import_module(module_name)
    config_cls = getattr(module, class_name)
    if help_config:
        typer.echo("\n".join(describe(config_cls)))
        return
    try:
        if config is None:
            raise UsageError("--config FILE.yaml is required")
        cfg = pin_registry_refs(load_config(config_cls, config, overrides or []))
        run_dir = out or get_settings().runs_dir / cfg.run_name
        # Trainers print progress dicts on stdout; keep stdout for the summary (one JSON object with --json).
        with contextlib.redirect_stdout(sys.stderr), reporting_full_disk(
                run_dir, f"training into {run_dir}", "free some space, then rerun with --resume"):
            summary = module.run(cfg, run_dir, resume)
        if register:
            summary["registered"] = _register(run_dir / "final", register, run_dir.name)
    except ChatloopError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    typer.echo(json.dumps(summary) if as_json else "\n".join(f"{k}: {v}" for k, v in summary.items()))


def pin_registry_refs(cfg):
    """The config with each registry reference (NAME, NAME@canary) replaced by the exact version it
    names now (NAME:VERSION), so a stage can start from any registered version (a pulled model, an
    earlier turn's output) and its saved config and lineage say which one."""
    from chatloop.models.refs import channel_ref
    from chatloop.registry.resolve import resolve_ref

    pinned = {}
    for field in ("model", "tokenizer", "reward_model"):
        value = getattr(cfg, field, None)
        if (isinstance(value, str) and value != "default" and channel_ref(value)
                and not Path(value).expanduser().exists()):
            pinned[field] = resolve_ref(value).model_id
    return cfg.model_copy(update=pinned) if pinned else cfg


def _register(final: Path, name: str, run_name: str) -> str:
    """Register a finished run's output in the model registry; returns the new NAME:VERSION."""
    from chatloop.config import get_settings
    from chatloop.models.manifest import model_id
    from chatloop.registry.cli import actor
    from chatloop.registry.versions import register
    from chatloop.store.db import Database

    if not (final / "config.json").is_file():
        raise UsageError(f"--register: the {final.parent.name} stage wrote no model to register")
    with Database(get_settings().db_url).session() as s:
        row = register(s, final, name, source_label=f"runs:{run_name}", actor=actor())
        return model_id(row.name, row.version)
