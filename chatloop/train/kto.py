"""Stage `kto`: Kahneman-Tversky optimisation on thumbs up/down labels with TRL's KTOTrainer.

    chatloop train kto --config configs/tiny/kto.yaml [--resume]

Data: `kto` JSONL ({"prompt": [...], "completion": {...}, "label": true|false}), e.g. exported feedback.
"""

from pathlib import Path

from pydantic import Field

from chatloop.train.common import setup_torch
from chatloop.train.hf import (
    HFStageConfig, atomic_trainer, load_parent, lora_config, rank_and_world, train_and_publish, trl_args,
)
from chatloop.train.prefs import dataset, kto_example, load_rows
from chatloop.train.rundir import RunDir, note


class KTOStageConfig(HFStageConfig):
    beta: float = Field(default=0.1, gt=0, description="Strength of the KL pull towards the reference model.")
    desirable_weight: float = Field(default=1.0, gt=0, description="Loss weight of thumbs-up examples.")
    undesirable_weight: float = Field(default=1.0, gt=0, description="Loss weight of thumbs-down examples.")


def run(cfg: KTOStageConfig, run_dir: Path, resume: bool) -> dict:
    setup_torch(cfg)
    from trl import KTOConfig, KTOTrainer

    run = RunDir(run_dir, cfg, stage="kto", resume=resume, writer=rank_and_world()[0] == 0)
    model, tokenizer, parent = load_parent(cfg.model)
    train, held, files = load_rows(cfg, run_dir, "kto")
    args = trl_args(cfg, KTOConfig, run_dir, beta=cfg.beta, max_length=cfg.max_length,
                    desirable_weight=cfg.desirable_weight, undesirable_weight=cfg.undesirable_weight)
    trainer = atomic_trainer(KTOTrainer)(
        model=model, args=args, processing_class=tokenizer, train_dataset=dataset(train, kto_example),
        eval_dataset=dataset(held, kto_example), peft_config=lora_config(cfg),
    )
    note(f"kto: {len(train)} train / {len(held)} held-out labelled completions from {parent}")
    return train_and_publish(trainer, run, resume, tokenizer, parent=parent, data=files)
