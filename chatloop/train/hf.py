"""Plumbing for the stages that TRL runs (sft, reward, dpo, kto, grpo) on the HF Trainer.

- `HFStageConfig`: the fields these stages share (parent model, data, steps, LoRA...), mapped onto
  the TRL config class; `trl:` passes any further TRL/TrainingArguments field through unchanged.
- `atomic_trainer(cls)`: a subclass of a TRL trainer whose checkpoints go through
  checkpoints.save_checkpoint: the HF `checkpoint-N` folder is written inside a staging directory,
  sealed with the sha256 marker and renamed to `checkpoints/step-N` (HF's own folders are not atomic).
  HF's checkpoint holds the weights (or LoRA adapters), optimizer, scheduler, RNG states (python,
  numpy, torch) and trainer state (step, log history); the data position follows from the step and
  the epoch-seeded sampler. A stage trainer that keeps more state between steps (GRPO's buffer of
  sampled completions) returns it from `extra_state()`; it is saved beside, one file per process.
- `MetricsCallback`: every HF log line -> metrics.jsonl, with tokens/s.
- `train_and_publish`: resume from the newest verified checkpoint, train, merge LoRA, write final/.
  A checkpoint at max_steps (a run killed after its last step) is loaded, not trained on.
"""

import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chatloop.errors import UsageError
from chatloop.hardware import native_bf16
from chatloop.train.checkpoints import CheckpointError, latest_checkpoint, save_checkpoint
from chatloop.train.common import load_pretrained
from chatloop.train.config import StageConfig, dump_config
from chatloop.train.rundir import RunDir, note


class LoraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="Train LoRA adapters instead of all weights (merged into final/).")
    r: int = Field(default=16, ge=1, description="LoRA rank.")
    alpha: int = Field(default=32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names that get adapters.")
    layers_to_transform: list[int] | None = Field(
        default=None, description="Only these transformer layers (0-based) get adapters, e.g. the top few: "
        "backward then stops at the lowest of them, which makes a step much cheaper. Default: every layer.")


class HFStageConfig(StageConfig):
    model: str = Field(description="Parent model: any REF: a registered NAME (its stable "
                       "version) or NAME:VERSION, `runs:NAME`, `default`, `hf:ORG/NAME`, or a model directory.")
    data: list[str] = Field(description="JSONL files, globs or synthetic:KIND:N specs (schema per stage).")
    max_steps: int = Field(default=100, ge=1, description="Optimizer steps.")
    batch_size: int = Field(default=8, ge=1, description="Examples per micro-batch.")
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(default=1e-4, gt=0, description="Peak learning rate.")
    warmup_steps: int = Field(default=10, ge=0, description="Linear warmup steps.")
    lr_scheduler: str = Field(default="cosine", description="HF scheduler name (cosine, linear, constant...).")
    max_length: int = Field(default=256, ge=8, description="Longest tokenized example; longer chats drop old turns.")
    eval_fraction: float = Field(default=0.05, ge=0, lt=0.5, description="Share of rows held out for evaluation.")
    logging_steps: int = Field(default=5, ge=1, description="Log metrics every N steps.")
    precision: Literal["float32", "bfloat16", "auto"] = Field(
        default="float32", description="Matrix-multiply precision: float32, bfloat16 (autocast; weights and "
        "optimizer stay float32), or auto: bfloat16 where the CPU multiplies it natively (AVX-512 BF16, AMX; "
        "about 2x faster there), else float32 (emulated bf16 is slower).")
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations in the backward pass instead of keeping them: less "
        "memory (for large models on a GPU), about a third more compute. TRL turns it on by default; off here.")
    lora: LoraOptions = Field(default_factory=LoraOptions, description="Low-rank adapters (PEFT).")
    trl: dict[str, Any] = Field(default_factory=dict, description="Extra fields for the TRL config class, passed as is.")


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the process count under torchrun / accelerate launch (else 0, 1)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def trl_args(cfg: HFStageConfig, config_cls, run_dir: Path, **stage_fields):
    """The TRL config for a stage: shared fields, then the stage's own, then the user's `trl:` extras.
    `batch_size` is the global batch: each of N processes gets batch_size / N rows."""
    _rank, world = rank_and_world()
    if cfg.batch_size % world:
        raise UsageError(f"batch_size {cfg.batch_size} must divide by the {world} processes")
    fields = dict(
        output_dir=str(run_dir / "hf"), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size // world,
        per_device_eval_batch_size=cfg.batch_size // world, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr, warmup_steps=cfg.warmup_steps, lr_scheduler_type=cfg.lr_scheduler,
        logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_every, save_total_limit=None,
        seed=cfg.seed, data_seed=cfg.seed, use_cpu=True, report_to="none", dataloader_num_workers=0,
        eval_strategy="no", disable_tqdm=None, include_num_input_tokens_seen=True, bf16=use_bf16(cfg), fp16=False,
        gradient_checkpointing=cfg.gradient_checkpointing,
    )
    fields.update(stage_fields)
    fields.update(cfg.trl)
    try:
        return config_cls(**fields)
    except (TypeError, ValueError) as e:
        raise UsageError(f"invalid TRL settings for {config_cls.__name__}: {e}") from e


def use_bf16(cfg: HFStageConfig) -> bool:
    return cfg.precision == "bfloat16" or (cfg.precision == "auto" and native_bf16())


def lora_config(cfg: HFStageConfig, task_type: str = "CAUSAL_LM"):
    if not cfg.lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, layers_to_transform=cfg.lora.layers_to_transform,
                      task_type=task_type)


def extra_state_file() -> str:
    return f"chatloop_state_rank{rank_and_world()[0]}.pt"


def score_label_positions_only_on_cpu() -> None:
    """TRL's fused LM head projects only the positions that have a label where Triton runs, and every
    position elsewhere (so that tile shapes stay fixed for compiled backends such as Neuron). On the CPU,
    in eager mode, nothing recompiles, and scoring every position spends most of an SFT step on prompt
    tokens whose loss is masked anyway (tool descriptions, system prompts, user turns): compact scoring
    there makes a step of the tool preset 1.8x faster with the same losses. A no-op where TRL's
    internals differ (the pin is trl<2)."""
    import torch
    from trl.trainer import utils

    use_triton = getattr(utils, "_use_triton", None)
    if use_triton is None or getattr(use_triton, "chatloop_cpu_compact", False):
        return

    def compact(device) -> bool:
        return torch.device(device).type == "cpu" or use_triton(device)

    compact.chatloop_cpu_compact = True
    utils._use_triton = compact


def atomic_trainer(base):
    """`base` (a TRL trainer class) with checkpoints written atomically and sealed."""
    score_label_positions_only_on_cpu()

    class Atomic(base):
        chatloop_run: RunDir

        # Whether resuming without the extra state would change the weights (else only metrics).
        extra_state_required = False

        def _synced_ref(self):
            """The reference model when `sync_ref_model` moves it towards the policy during training."""
            return getattr(self, "ref_model", None) if getattr(self.args, "sync_ref_model", False) else None

        def extra_state(self) -> dict | None:
            """What this trainer carries from step to step beyond HF's checkpoint (tensors, lists,
            numbers); None when nothing. TRL's token counter feeds the `num_tokens` metric."""
            state = {}
            if hasattr(self, "_total_train_tokens"):
                state["total_train_tokens"] = self._total_train_tokens
            if (ref := self._synced_ref()) is not None:
                state["ref_model"] = ref.state_dict()
            return state or None

        def load_extra_state(self, state: dict) -> None:
            """Restore what `extra_state` returned when the checkpoint was written."""
            if "total_train_tokens" in state:
                self._total_train_tokens = state["total_train_tokens"]
            if (ref := self._synced_ref()) is not None:
                ref.load_state_dict(state["ref_model"])

        def restore_extra_state(self, checkpoint: Path) -> None:
            import torch

            if self.extra_state() is None:
                return
            path = checkpoint / extra_state_file()
            if path.is_file():
                self.load_extra_state(torch.load(path, weights_only=True))
            elif self.extra_state_required or self._synced_ref() is not None:
                raise CheckpointError(
                    f"checkpoint {checkpoint} has no {path.name}: it was written without this stage's "
                    "training state, so resuming would not reproduce the run; start it again without --resume")
            else:
                note(f"{checkpoint} has no {path.name}: the num_tokens metric restarts from 0")

        def _save_checkpoint(self, model, trial):
            import torch
            import torch.distributed as dist

            step = self.state.global_step
            parent_save = super()._save_checkpoint
            rank, world = rank_and_world()

            def save_into(tmp: Path) -> None:
                original = self.args.output_dir
                self.args.output_dir = str(tmp)
                try:
                    parent_save(model, trial)
                finally:
                    self.args.output_dir = original
                if (state := self.extra_state()) is not None:
                    torch.save(state, tmp / f"checkpoint-{step}" / extra_state_file())

            def share(tmp: Path | None) -> Path:
                """Distributed: all ranks write their files (rng_state_N.pth) into rank 0's staging dir."""
                holder = [str(tmp) if tmp else None]
                dist.broadcast_object_list(holder, src=0)
                return Path(holder[0])

            if rank > 0:
                save_into(share(None))
                dist.barrier()  # everyone has written: rank 0 seals and publishes ...
                dist.barrier()  # ... and is done
                return

            def write(tmp: Path) -> None:
                if world > 1:
                    share(tmp)
                save_into(tmp)
                if world > 1:
                    dist.barrier()
                inner = tmp / f"checkpoint-{step}"
                for item in inner.iterdir():
                    item.rename(tmp / item.name)
                inner.rmdir()
                (tmp / "config.yaml").write_text(dump_config(self.chatloop_run.cfg), encoding="utf-8")

            save_checkpoint(self.chatloop_run.checkpoints, step, write, self.chatloop_run.cfg.keep_checkpoints)
            if world > 1:
                dist.barrier()

    Atomic.__name__ = Atomic.__qualname__ = f"Atomic{base.__name__}"
    return Atomic


def metrics_callback(run: RunDir):
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        """HF log records -> metrics.jsonl, adding tokens/s between consecutive logs."""

        def __init__(self):
            self.last = (time.perf_counter(), 0)

        def on_log(self, args, state, control, logs=None, **kwargs):
            record = {"step": state.global_step, **{k: v for k, v in (logs or {}).items()}}
            seen = state.num_input_tokens_seen or 0
            now = time.perf_counter()
            if seen > self.last[1]:
                record["tokens_per_s"] = round((seen - self.last[1]) / max(now - self.last[0], 1e-9), 1)
            self.last = (now, seen)
            run.log(record)

    return MetricsCallback()


def load_parent(ref: str):
    """(model, tokenizer, parent id) for a stage's starting point, float32 on CPU."""
    from transformers import AutoModelForCausalLM

    return load_pretrained(ref, AutoModelForCausalLM)


def split(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    import random

    if fraction <= 0 or len(rows) < 10:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n = max(1, int(len(rows) * fraction))
    return [rows[i] for i in order[n:]], [rows[i] for i in order[:n]]


def run_loss(log_history: list[dict]) -> float | None:
    """The mean training loss of the whole run, from the logged records (each weighted by the steps
    it covers), so that a resumed run reports the same figure as an uninterrupted one (HF's
    `training_loss` only covers the steps of the last `train()` call)."""
    total, steps, last = 0.0, 0, 0
    for record in log_history:
        if "loss" in record and "step" in record:
            total += record["loss"] * (record["step"] - last)
            steps += record["step"] - last
            last = record["step"]
    return total / steps if steps else None


def finish_from(trainer, checkpoint: Path) -> None:
    """Load a checkpoint written at max_steps without training: HF's loop would take one step more
    before it noticed that the run is over."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(str(checkpoint))  # what train() calls to load weights / adapters
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


def train_and_publish(trainer, run: RunDir, resume: bool, tokenizer, *, parent: str, data: list[Path],
                      extra_metrics=None) -> dict:
    """Run `trainer` (resuming if asked), evaluate, merge LoRA, publish final/; returns metrics.
    `extra_metrics(model)` adds stage-specific figures measured on the merged model."""
    trainer.chatloop_run = run
    trainer.add_callback(metrics_callback(run))
    ckpt = latest_checkpoint(run.checkpoints) if resume else None
    start = int(ckpt.name.split("-")[1]) if ckpt else 0
    if resume:
        run.rewind_metrics(start)
        if ckpt:
            note(f"resuming from {ckpt} (step {start})")
    if ckpt:
        trainer.restore_extra_state(ckpt)
    if ckpt and start >= trainer.args.max_steps:
        finish_from(trainer, ckpt)
    else:
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    metrics = {"step": trainer.state.global_step, "train_loss": run_loss(trainer.state.log_history),
               "precision": "bfloat16" if trainer.args.bf16 else "float32"}
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    if losses:
        metrics.update(first_loss=losses[0], last_loss=losses[-1])
    for key in ("reward", "kl"):  # GRPO: the reward is what should rise
        series = [r[key] for r in trainer.state.log_history if key in r]
        if series:
            metrics.update({f"first_{key}": series[0], f"last_{key}": series[-1]})
    if trainer.eval_dataset is not None:
        metrics.update({k: v for k, v in trainer.evaluate().items() if isinstance(v, (int, float))})
    run.log({"step": trainer.state.global_step, "summary": True, **{k: v for k, v in metrics.items() if k != "step"}})
    if not run.writer:  # distributed, rank > 0: rank 0 publishes final/
        return {"rank": rank_and_world()[0], **metrics}
    model = trainer.model
    if hasattr(model, "merge_and_unload"):  # PEFT: serve one plain model
        model = model.merge_and_unload()
    if extra_metrics is not None:
        metrics.update(extra_metrics(model))

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    final = run.publish_final(write, parent=parent, data=data, metrics=metrics, step=trainer.state.global_step)
    return {"final": str(final), **metrics}
