"""Preference data for TRL (reward, dpo, kto): our JSONL rows -> TRL's conversational datasets.

TRL tokenizes conversational rows with the tokenizer's chat template, the same template that
`render_conversation` applies; tests/integration/test_train_prefs.py pins that TRL's prompt /
completion split equals render_conversation's assistant mask, so the chat format stays one thing.
"""

from pathlib import Path

from chatloop.data.schemas import read_dataset
from chatloop.train.common import expand_data
from chatloop.train.hf import HFStageConfig, split


def load_rows(cfg: HFStageConfig, run_dir: Path, kind: str) -> tuple[list[dict], list[dict], list[Path]]:
    files = expand_data(cfg.data, run_dir)
    rows = [row for path in files for row in read_dataset(path, kind)]
    train, held = split(rows, cfg.eval_fraction, cfg.seed)
    return train, held, files


def pair_example(row: dict) -> dict:
    return {"prompt": row["prompt"], "chosen": [row["chosen"]], "rejected": [row["rejected"]]}


def kto_example(row: dict) -> dict:
    return {"prompt": row["prompt"], "completion": [row["completion"]], "label": row["label"]}


def dataset(rows: list[dict], convert):
    from datasets import Dataset

    return Dataset.from_list([convert(r) for r in rows]) if rows else None
