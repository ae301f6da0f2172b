"""Pretraining: loss falls, `final/` loads in the engine, and resume after `kill -9` is bitwise exact.

The kill test runs the real CLI in subprocesses and kills it with SIGKILL at random moments, one of
them while a checkpoint is being written (a staging directory exists); every restart uses --resume.
The final weights must equal, bit for bit, those of an uninterrupted run with the same seed.
"""

import json
import random
import subprocess
from pathlib import Path

import pytest
import yaml
from killer import cli, env, kill_repeatedly

from chatloop.errors import UsageError
from chatloop.train.checkpoints import MARKER, CheckpointError, complete_checkpoints


def write_corpus(path: Path, n: int = 300) -> Path:
    r = random.Random(0)
    docs = []
    for i in range(n):
        a, b = r.randint(1, 99), r.randint(1, 99)
        docs.append(f"Note {i}: {a} plus {b} equals {a + b}. The cat sleeps {r.randint(5, 20)} hours.")
    path.write_text("\n\n".join(docs), encoding="utf-8")
    return path


def write_config(tmp: Path, tokenizer_dir: Path, **over) -> Path:
    cfg = {
        "run_name": "test-pretrain", "seed": 3, "tokenizer": str(tokenizer_dir),
        "data": [str(write_corpus(tmp / "corpus.txt"))],
        "model": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128},
        "seq_len": 32, "batch_size": 4, "max_steps": 30, "save_every": 3, "eval_every": 15,
        "measure_peak": False, "threads": 2, "optim": {"warmup_steps": 5, "lr": 0.003},
    }
    cfg.update(over)
    path = tmp / "pretrain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, default_dir):
    tmp = tmp_path_factory.mktemp("pretrain-ref")
    config = write_config(tmp, default_dir)
    out = tmp / "run"
    done = subprocess.run(cli("pretrain", config, out, "--json"), env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return config, out, json.loads(done.stdout)


def load_weights(final: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(final / "model.safetensors")


def test_pretrain_loss_falls_and_final_loads_in_engine(reference_run):
    from chatloop.models.loading import load_model
    from chatloop.models.manifest import verify_manifest

    _config, out, summary = reference_run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 31))
    assert records[-1]["loss"] < records[0]["loss"] - 1.0
    assert "eval_loss" in records[-1] and records[-1]["eval_ppl"] > 1
    assert all(r["tokens_per_s"] > 0 for r in records)
    manifest = verify_manifest(out / "final")
    assert manifest["stage"] == "pretrain" and len(manifest["data_sha256"]) == 64
    assert manifest["config"]["seed"] == 3 and manifest["metrics"]["eval_loss"] == summary["eval_loss"]
    loaded = load_model(str(out / "final"), "float32")
    assert loaded.model.config.model_type == "llama"
    assert (out / "config.yaml").is_file()


def test_resume_after_kill_matches_uninterrupted(reference_run, tmp_path):
    config, ref_out, _ = reference_run
    out = tmp_path / "run"
    report = kill_repeatedly("pretrain", config, out, kills=3)
    assert report["returncode"] == 0, report["stderr"]
    assert report["kills"] >= 2, "the run finished before it could be killed twice"
    assert report["killed_during_save"], "never managed to kill the run during a checkpoint save"
    assert not report["stray_staging"]
    ours, ref = load_weights(out / "final"), load_weights(ref_out / "final")
    assert ours.keys() == ref.keys()
    assert all(ours[k].equal(ref[k]) for k in ref), "resumed weights differ from the uninterrupted run"
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))


def test_tampered_checkpoint_is_refused_on_resume(tmp_path, default_dir):
    from chatloop.train.config import load_config
    from chatloop.train.pretrain import PretrainConfig, run

    config = write_config(tmp_path, default_dir, max_steps=6, save_every=2)
    cfg = load_config(PretrainConfig, config)
    run(cfg, tmp_path / "run", resume=False)
    newest = complete_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    assert (newest / MARKER).is_file()
    weights = newest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors") as err:
        run(cfg, tmp_path / "run", resume=True)
    assert "fails verification" in str(err.value)
    proc = subprocess.run(cli("pretrain", config, tmp_path / "run", "--resume"), env=env(), capture_output=True, text=True)
    assert proc.returncode == 2 and "refusing to resume" in proc.stderr


def test_fresh_start_refuses_to_clobber_an_existing_run(reference_run, tmp_path):
    from chatloop.train.config import load_config
    from chatloop.train.pretrain import PretrainConfig, run

    config, out, _ = reference_run
    with pytest.raises(UsageError, match="already holds a run"):
        run(load_config(PretrainConfig, config), out, resume=False)
    with pytest.raises(UsageError, match="config differs"):
        run(load_config(PretrainConfig, config, ["max_steps=31"]), out, resume=True)
