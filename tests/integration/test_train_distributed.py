"""Scale path: pretraining and SFT under `torchrun` with 2 CPU processes (gloo) follow the same loss
trajectory as one process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from test_train_pretrain import write_corpus

ROOT = Path(__file__).resolve().parents[2]


def _losses(run_dir: Path) -> list[float]:
    records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [r["loss"] for r in records if "loss" in r]


def test_two_process_pretrain_matches_one_process(tmp_path, default_dir):
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump({
        "run_name": "ddp", "seed": 1, "tokenizer": str(default_dir), "data": [str(write_corpus(tmp_path / "c.txt"))],
        "model": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128},
        "seq_len": 32, "batch_size": 8, "grad_accum": 2, "max_steps": 8, "save_every": 4, "eval_every": 8,
        "measure_peak": False, "threads": 1,
    }))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    train = ["-m", "chatloop", "train", "pretrain", "--config", str(config), "--out"]
    one = subprocess.run([sys.executable, *train, str(tmp_path / "one")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert one.returncode == 0, one.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    two = subprocess.run([*torchrun, *train, str(tmp_path / "two")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stderr.count("pretrain: ") == 2  # both ranks started
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 8
    assert all(abs(x - y) <= 1e-3 * abs(x) for x, y in zip(a, b)), (a, b)
    assert a[-1] < a[0]
    assert (tmp_path / "two" / "final" / "manifest.json").is_file()
    assert len(list((tmp_path / "two" / "checkpoints").iterdir())) == 1


def test_two_process_sft_matches_one_process(tmp_path, tiny_dir):
    """The TRL stages through the HF Trainer: same global batch, same losses; each rank's RNG state
    lands in the one sealed checkpoint."""
    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump({
        "run_name": "sft-ddp", "seed": 1, "model": str(tiny_dir), "data": ["synthetic:sft:200:en"],
        "max_steps": 6, "batch_size": 8, "lr": 1e-3, "warmup_steps": 1, "max_length": 96, "save_every": 3,
        "logging_steps": 1, "eval_fraction": 0.0, "threads": 1,
    }))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    train = ["-m", "chatloop", "train", "sft", "--config", str(config), "--out"]
    one = subprocess.run([sys.executable, *train, str(tmp_path / "one")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    two = subprocess.run([*torchrun, *train, str(tmp_path / "two")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 6 and a[-1] < a[0]
    assert all(abs(x - y) <= 1e-3 * abs(x) for x, y in zip(a, b)), (a, b)
    newest = sorted((tmp_path / "two" / "checkpoints").iterdir())[-1]
    assert (newest / "rng_state_0.pth").is_file() and (newest / "rng_state_1.pth").is_file()
    assert (tmp_path / "two" / "final" / "manifest.json").is_file()
