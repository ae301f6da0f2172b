"""Stage `sft`: supervised fine-tuning on `{"messages": [...]}` JSONL with TRL's SFTTrainer.

    chatloop train sft --config configs/tiny/sft.yaml [--resume] [--set lora.enabled=true]

Every conversation is rendered by the one chat-format function,
`chatloop.models.chat_format.render_conversation`, and its assistant mask becomes the labels
(-100 elsewhere), so the loss covers assistant tokens (end-of-turn included) and nothing else.
Rows with `tools` are rendered with them, each model in its own tool format: its calls are
assistant tokens (trained on), the tool results are not.
The tokenized rows go to SFTTrainer with preparation skipped: TRL trains exactly on them.
Full fine-tuning or LoRA (merged into final/). Checkpoints are atomic (hf.atomic_trainer).
"""

from pathlib import Path

from chatloop.train.common import expand_data, setup_torch
from chatloop.train.hf import (
    HFStageConfig, atomic_trainer, load_parent, lora_config, rank_and_world, split, train_and_publish, trl_args,
)
from chatloop.train.rundir import RunDir, note


class SFTStageConfig(HFStageConfig):
    pass


def tokenize_chats(tokenizer, rows: list[dict], max_length: int) -> list[dict]:
    """input_ids + labels (assistant tokens only) for each conversation, via render_conversation."""
    from chatloop.models.chat_format import render_conversation

    out = []
    for row in rows:
        r = render_conversation(tokenizer, row["messages"], max_tokens=max_length, tools=row.get("tools"))
        labels = [tok if m else -100 for tok, m in zip(r.ids, r.mask)]
        if any(label != -100 for label in labels):
            out.append({"input_ids": r.ids, "labels": labels})
    return out


def run(cfg: SFTStageConfig, run_dir: Path, resume: bool) -> dict:
    setup_torch(cfg)
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from chatloop.data.schemas import read_dataset

    run = RunDir(run_dir, cfg, stage="sft", resume=resume, writer=rank_and_world()[0] == 0)
    model, tokenizer, parent = load_parent(cfg.model)
    files = expand_data(cfg.data, run_dir)
    rows = [row for path in files for row in read_dataset(path, "sft")]
    train_rows, eval_rows = split(tokenize_chats(tokenizer, rows, cfg.max_length), cfg.eval_fraction, cfg.seed)
    args = trl_args(cfg, SFTConfig, run_dir, max_length=cfg.max_length,
                    dataset_kwargs={"skip_prepare_dataset": True}, remove_unused_columns=False)
    trainer = atomic_trainer(SFTTrainer)(
        model=model, args=args, processing_class=tokenizer,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        peft_config=lora_config(cfg),
    )
    note(f"sft: {len(train_rows)} train / {len(eval_rows)} held-out conversations, "
         f"{'LoRA' if cfg.lora.enabled else 'full'} fine-tuning of {parent}")
    return train_and_publish(trainer, run, resume, tokenizer, parent=parent, data=files)
