"""One turn of the flywheel, step by step, each step resumable:

    export    the feedback of consenting users -> CHATLOOP_HOME/flywheel/TURN/feedback.jsonl
    train     KTO (thumbs) or DPO (pairs) with LoRA on the model's stable version -> TURN/run/final
    register  the result as the model's next version, with lineage (parent, data snapshot, config)
    gate      evaluate candidate and stable (capability, sycophancy); refuse a worse candidate
    canary    if the gate passed: the candidate gets `canary_percent` of new conversations

The turn stops there: promotion stays a person's decision (`chatloop models promote`). Each
finished step's result is saved in TURN/state.json; running the same turn again skips finished
steps (training resumes from its newest checkpoint), so a killed turn continues where it stopped.
The stable version trained from is fixed when the turn starts.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from chatloop.errors import ChatloopError, UsageError
from chatloop.flywheel.config import FlywheelConfig, stage_config
from chatloop.fsutil import atomic_write_text
from chatloop.models.manifest import model_id
from chatloop.registry import releases
from chatloop.registry.evaluations import run_gate
from chatloop.registry.versions import SYSTEM, register
from chatloop.store.db import Database
from chatloop.train.config import validation_reason

STEPS = ("export", "train", "register", "gate", "canary")
KIND = {"kto": "kto", "dpo": "pairs"}


class TurnStopped(ChatloopError):
    """The turn ended early for a reason that is not a failure (too little feedback to train on)."""


@dataclass
class Turn:
    cfg: FlywheelConfig
    path: Path  # CHATLOOP_HOME/flywheel/TURN
    db: Database
    actor: str = SYSTEM

    @property
    def name(self) -> str:
        return self.path.name

    # --- state ---------------------------------------------------------------------------------------

    def load_state(self) -> dict:
        state_file = self.path / "state.json"
        config = self.cfg.model_dump(mode="json")
        if not state_file.exists():
            return {"turn": self.name, "config": config, "steps": {}}
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if state["config"] != config:
            raise UsageError(f"turn {self.name} was started with another config ({state_file}); resuming with "
                             "different settings would mix two turns: start a new turn instead")
        return state

    def save_state(self, state: dict) -> None:
        atomic_write_text(self.path / "state.json", json.dumps(state, indent=2, ensure_ascii=False) + "\n")

    # --- steps ---------------------------------------------------------------------------------------

    def export(self, state: dict) -> dict:
        from chatloop.data.export import export_file, parse_when

        with self.db.session() as s:
            stable = releases.channels(s, self.cfg.model).stable
            if stable is None:
                raise UsageError(f"{self.cfg.model} has no stable version to train from")
            report = export_file(
                s, KIND[self.cfg.method], self.path / "feedback.jsonl",
                since=parse_when(self.cfg.since) if self.cfg.since else None,
                until=parse_when(self.cfg.until, end=True, option="--until") if self.cfg.until else None,
                model_versions=self.cfg.feedback_versions or None)
        out = {**report.as_dict(), "stable": stable}
        if report.rows < self.cfg.min_rows:  # not a finished step: the next run exports again
            state["last_export"] = out
            state["stopped"] = f"only {report.rows} {out['kind']} rows of feedback (min_rows is {self.cfg.min_rows})"
            raise TurnStopped(state["stopped"])
        return out

    def train(self, state: dict) -> dict:
        import contextlib
        import importlib
        import sys

        data = state["steps"]["export"]
        module = importlib.import_module(f"chatloop.train.{self.cfg.method}")
        fields = {**self.cfg.train, "run_name": self.name, "model": model_id(self.cfg.model, data["stable"]),
                  "data": [data["out"]]}
        try:
            stage_cfg = stage_config(self.cfg.method, fields)
        except ValidationError as e:
            raise UsageError(f"flywheel config: invalid train settings: {validation_reason(e)}") from e
        run_dir = self.path / "run"
        resume = (run_dir / "config.yaml").exists()
        with contextlib.redirect_stdout(sys.stderr):  # trainers print progress; stdout is for --json
            summary = module.run(stage_cfg, run_dir, resume)
        return {"run_dir": str(run_dir), "summary": summary}

    def register(self, state: dict) -> dict:
        with self.db.session() as s:
            row = register(s, self.path / "run" / "final", self.cfg.model, source_label=f"flywheel:{self.name}",
                           actor=self.actor)
            return {"candidate": model_id(row.name, row.version), "version": row.version, "parent": row.parent,
                    "data_hash": row.data_hash}

    def gate(self, state: dict) -> dict:
        stable = state["steps"]["export"]["stable"]
        candidate = state["steps"]["register"]["version"]
        return run_gate(self.db, self.cfg.model, candidate, stable, dtype=self.cfg.gate.dtype, limit=self.cfg.gate.limit)

    def canary(self, state: dict) -> dict:
        gate = state["steps"]["gate"]
        if not gate["passed"]:
            return {"started": False, "reason": "the gate refused the candidate: " + "; ".join(gate["reasons"])}
        with self.db.session() as s:
            event = releases.set_canary(s, self.cfg.model, state["steps"]["register"]["version"],
                                        self.cfg.canary_percent, actor=self.actor, reason=f"flywheel turn {self.name}")
            return {"started": True, "event": releases.event_out(event)}

    # --- running -------------------------------------------------------------------------------------

    def run(self, on_step: Callable[[str, str], None] = lambda step, status: None) -> dict:
        """Run the steps not finished yet; `on_step(step, status)` reports progress
        (status: skipped, running, done, stopped). Returns the turn's report."""
        self.path.mkdir(parents=True, exist_ok=True)
        state = self.load_state()
        state.pop("stopped", None)
        for step in STEPS:
            if step in state["steps"]:
                on_step(step, "skipped")
                continue
            on_step(step, "running")
            started = time.perf_counter()
            try:
                result = getattr(self, step)(state)
            except TurnStopped:
                self.save_state(state)
                on_step(step, "stopped")
                return report(state)
            state["steps"][step] = {**result, "seconds": round(time.perf_counter() - started, 1)}
            self.save_state(state)
            on_step(step, "done")
        return report(state)


def report(state: dict) -> dict:
    """The turn as one JSON object: the data snapshot, the candidate, each suite's scores, the gate's
    decision and the canary."""
    steps = state["steps"]
    gate = steps.get("gate")
    export = steps.get("export") or state.get("last_export")
    out = {
        "turn": state["turn"], "model": state["config"]["model"], "method": state["config"]["method"],
        "stable": export.get("stable") if export else None,
        "data": {k: export.get(k) for k in ("kind", "rows", "snapshot", "out", "skipped", "scrubbed")}
        if export else None,
        "train": steps["train"]["summary"] if "train" in steps else None,
        "candidate": steps.get("register", {}).get("candidate"),
        "gate": gate,
        "canary": steps.get("canary"),
        "seconds": {step: steps[step]["seconds"] for step in STEPS if step in steps and "seconds" in steps[step]},
        "finished": "canary" in steps,
        "stopped": state.get("stopped"),
    }
    return out
