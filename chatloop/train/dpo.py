"""Stage `dpo`: direct preference optimisation with TRL's DPOTrainer.

    chatloop train dpo --config configs/tiny/dpo.yaml [--resume]

Data: `pairs` JSONL ({"prompt": [...], "chosen": {...}, "rejected": {...}}, see chatloop.data.schemas).
The reference model is the parent (a frozen copy, or the adapter-free base under LoRA). Reports
held-out reward accuracy (chosen scored above rejected by the implicit DPO reward).
"""

from pathlib import Path

from pydantic import Field

from chatloop.train.common import setup_torch
from chatloop.train.hf import (
    HFStageConfig, atomic_trainer, load_parent, lora_config, rank_and_world, train_and_publish, trl_args,
)
from chatloop.train.prefs import dataset, load_rows, pair_example
from chatloop.train.rundir import RunDir, note


class DPOStageConfig(HFStageConfig):
    beta: float = Field(default=0.1, gt=0, description="Strength of the KL pull towards the reference model.")


def run(cfg: DPOStageConfig, run_dir: Path, resume: bool) -> dict:
    setup_torch(cfg)
    from trl import DPOConfig, DPOTrainer

    run = RunDir(run_dir, cfg, stage="dpo", resume=resume, writer=rank_and_world()[0] == 0)
    model, tokenizer, parent = load_parent(cfg.model)
    train, held, files = load_rows(cfg, run_dir, "pairs")
    args = trl_args(cfg, DPOConfig, run_dir, beta=cfg.beta, max_length=cfg.max_length)
    trainer = atomic_trainer(DPOTrainer)(
        model=model, args=args, processing_class=tokenizer, train_dataset=dataset(train, pair_example),
        eval_dataset=dataset(held, pair_example), peft_config=lora_config(cfg),
    )
    note(f"dpo: {len(train)} train / {len(held)} held-out pairs from {parent}")
    return train_and_publish(trainer, run, resume, tokenizer, parent=parent, data=files)
