"""Stage `reward`: a pairwise (Bradley-Terry) reward model with TRL's RewardTrainer.

    chatloop train reward --config configs/tiny/reward.yaml [--resume]

The parent causal LM gets a one-output classification head; the loss is -log sigmoid(r_chosen -
r_rejected). Reports held-out pair accuracy: how often the chosen reply scores above the rejected
one. `score()` is how GRPO and evaluations ask the model for a reward: the conversation is rendered
by `render_conversation` (the one chat format) and the score is the head's output on its last token.
"""

from pathlib import Path

from chatloop.train.common import load_pretrained, setup_torch
from chatloop.train.hf import (
    HFStageConfig, atomic_trainer, lora_config, rank_and_world, train_and_publish, trl_args,
)
from chatloop.train.prefs import dataset, load_rows, pair_example
from chatloop.train.rundir import RunDir, note


class RewardStageConfig(HFStageConfig):
    pass


def load_reward_model(ref: str):
    """(model, tokenizer, parent id): the model under a one-output classification head."""
    from transformers import AutoModelForSequenceClassification

    model, tokenizer, parent = load_pretrained(ref, AutoModelForSequenceClassification, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, parent


def score(model, tokenizer, prompt: list[dict], completion: dict, max_length: int = 512) -> float:
    import torch

    from chatloop.models.chat_format import render_conversation

    ids = render_conversation(tokenizer, prompt + [completion], max_tokens=max_length).ids
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, 0].item()


def pair_accuracy(model, tokenizer, rows: list[dict]) -> float:
    model.eval()
    wins = sum(score(model, tokenizer, r["prompt"], r["chosen"]) > score(model, tokenizer, r["prompt"], r["rejected"])
               for r in rows)
    return wins / len(rows)


def run(cfg: RewardStageConfig, run_dir: Path, resume: bool) -> dict:
    setup_torch(cfg)
    from trl import RewardConfig, RewardTrainer

    run = RunDir(run_dir, cfg, stage="reward", resume=resume, writer=rank_and_world()[0] == 0)
    model, tokenizer, parent = load_reward_model(cfg.model)
    train, held, files = load_rows(cfg, run_dir, "pairs")
    args = trl_args(cfg, RewardConfig, run_dir, max_length=cfg.max_length)
    trainer = atomic_trainer(RewardTrainer)(
        model=model, args=args, processing_class=tokenizer, train_dataset=dataset(train, pair_example),
        eval_dataset=dataset(held, pair_example), peft_config=lora_config(cfg, "SEQ_CLS"),
    )
    note(f"reward: {len(train)} train / {len(held)} held-out pairs, head on {parent}")

    def accuracy(merged) -> dict:
        return {"heldout_pair_accuracy": round(pair_accuracy(merged, tokenizer, held), 4)} if held else {}

    return train_and_publish(trainer, run, resume, tokenizer, parent=parent, data=files, extra_metrics=accuracy)
