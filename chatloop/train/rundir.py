"""A training run's directory (docs/training.md): `config.yaml`, `metrics.jsonl`, `checkpoints/`, `final/`.

    run = RunDir(path, cfg, stage="pretrain", resume=False)   # refuses to clobber an existing run
    run.log({"step": 1, "loss": 3.2})
    run.publish_final(lambda tmp: model.save_pretrained(tmp), parent=..., data=[...], metrics={...})

`final/` is an ordinary Hugging Face model directory (safetensors, tokenizer, config) with a
`manifest.json` (sha256 per file, parent model, data snapshot hash, config, final metrics), written
to a staging directory and renamed into place, so `chatloop generate --model RUN/final` either sees
the finished model or nothing.
"""

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from chatloop.errors import UsageError
from chatloop.fsutil import atomic_write_text, publish_dir, reporting_full_disk, sha256_file, staging_dir
from chatloop.models.manifest import write_manifest
from chatloop.train.checkpoints import clean_staging
from chatloop.train.config import dump_config


def data_snapshot_hash(paths: list[Path]) -> str:
    """The data a stage read: the sha256 of its file when there is one (so it equals the snapshot
    hash `chatloop data export` reported for it), else a sha256 over the files' names and hashes."""
    if len(paths) == 1:
        return sha256_file(paths[0])
    h = hashlib.sha256()
    for p in sorted(paths, key=str):
        h.update(f"{p.name}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


class RunDir:
    def __init__(self, path: Path, cfg: BaseModel, *, stage: str, resume: bool, writer: bool = True):
        # writer=False: another process of a distributed run (rank > 0) that checks but never writes.
        self.writer = writer
        self.path = path
        self.stage = stage
        self.cfg = cfg
        self.checkpoints = path / "checkpoints"
        self.metrics_path = path / "metrics.jsonl"
        self.final = path / "final"
        config_text = dump_config(cfg)
        saved = path / "config.yaml"
        if resume and saved.is_file():
            if saved.read_text(encoding="utf-8") != config_text:
                raise UsageError(
                    f"--resume: the config differs from the one saved in {saved}; resuming with other "
                    "settings would not reproduce the run (diff the files, or start a new --out directory)"
                )
        elif not resume and (self.checkpoints.exists() or self.metrics_path.exists() or self.final.exists()):
            raise UsageError(
                f"{path} already holds a run; pass --resume to continue it, or delete it / choose --out"
            )
        if writer:
            path.mkdir(parents=True, exist_ok=True)
            clean_staging(self.checkpoints)
            for stray in path.glob(f".{self.final.name}.tmp-*"):  # a final/ whose publishing was killed
                shutil.rmtree(stray)
            atomic_write_text(saved, config_text)

    def log(self, record: dict) -> None:
        if not self.writer:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def rewind_metrics(self, step: int) -> None:
        """On resume, drop records of steps after the checkpoint, and the run's summary record
        (`"summary": true`): they are about to be redone."""
        if not self.writer or not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by kill -9; it belongs to a step being redone
            if record.get("step", 0) <= step and not record.get("summary"):
                kept.append(line + "\n")
        atomic_write_text(self.metrics_path, "".join(kept))

    def publish_final(
        self, write: Callable[[Path], None], *, parent: str | None, data: list[Path], metrics: dict, step: int
    ) -> Path:
        tmp = None
        try:
            with reporting_full_disk(self.path, f"writing {self.final}",
                                     "the checkpoints are intact: free some space, then rerun with --resume"):
                tmp = staging_dir(self.final)
                write(tmp)
                atomic_write_text(tmp / "training_config.yaml", dump_config(self.cfg))
                write_manifest(
                    tmp,
                    name=self.path.name,
                    version=f"{self.stage}-step{step}",
                    stage=self.stage,
                    parent=parent,
                    data_sha256=data_snapshot_hash(data),
                    data_files=[str(p) for p in data],
                    config=self.cfg.model_dump(mode="json"),
                    metrics=metrics,
                )
                if self.final.exists():
                    shutil.rmtree(self.final)
                publish_dir(tmp, self.final)
        finally:
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp)
        return self.final


def note(message: str) -> None:
    """Progress notes go to stderr so `--json` output on stdout stays one object."""
    print(message, file=sys.stderr, flush=True)
