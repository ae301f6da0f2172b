"""Scale path: pretraining under `torchrun` with 2 CPU processes (gloo) follows the same loss
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
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


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
