"""SFT through TRL keeps the checkpoint contract: kill -9 at random moments (one during a save),
--resume each time, and the final weights equal an uninterrupted run's bit for bit."""

import subprocess

import yaml
from killer import cli, env, kill_repeatedly
from safetensors.torch import load_file


def test_sft_resume_after_kill_matches_uninterrupted(tmp_path, tiny_dir):
    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump({
        "run_name": "sft-kill", "seed": 5, "model": str(tiny_dir), "data": ["synthetic:sft:200:mix"],
        "max_steps": 16, "batch_size": 4, "lr": 1e-3, "warmup_steps": 2, "max_length": 96,
        "save_every": 2, "logging_steps": 1, "eval_fraction": 0.0, "threads": 2,
    }))
    ref = subprocess.run(cli("sft", config, tmp_path / "ref"), env=env(), capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    report = kill_repeatedly("sft", config, out, kills=2)
    assert report["returncode"] == 0, report["stderr"]
    assert report["kills"] >= 2 and report["killed_during_save"] and not report["stray_staging"]
    ours = load_file(out / "final" / "model.safetensors")
    theirs = load_file(tmp_path / "ref" / "final" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all(ours[k].equal(theirs[k]) for k in theirs), "resumed SFT weights differ from the uninterrupted run"


def test_json_flag_prints_one_object_on_stdout(tmp_path, tiny_dir):
    """TRL's trainers print log dicts; with --json stdout must still hold exactly one JSON object."""
    import json

    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump({
        "run_name": "sft-json", "model": str(tiny_dir), "data": ["synthetic:sft:40:en"], "max_steps": 2,
        "batch_size": 4, "max_length": 64, "logging_steps": 1, "eval_fraction": 0.0,
    }))
    done = subprocess.run(cli("sft", config, tmp_path / "run", "--json"), env=env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["step"] == 2 and summary["final"].endswith("final")
