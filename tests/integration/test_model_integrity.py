"""A corrupted or truncated model file, or a tampered manifest, is refused with the file named,
wherever a model is loaded from: a model directory, a registry version, a training run's final/, a
training stage's parent; a training checkpoint whose files were damaged is refused on resume, naming
the file and the older checkpoint that still verifies (tests/unit/test_models.py has the corrupt
manifest JSON and the flipped byte; test_registry.py a truncated source refused at registration).
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import make_tiny_model
from safetensors.torch import load_file

from chatloop.errors import ModelRefError
from chatloop.models.loading import load_model
from chatloop.models.manifest import MANIFEST, write_manifest
from chatloop.train.checkpoints import CheckpointError, complete_checkpoints


def chatloop(*args: str, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHATLOOP_HOME": str(home)}
    env.pop("CHATLOOP_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "chatloop", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def edit_manifest(directory, change) -> None:
    manifest = json.loads((directory / MANIFEST).read_text())
    change(manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture()
def model(tmp_path, tiny_dir):
    return shutil.copytree(tiny_dir, tmp_path / "model")


def test_truncated_weights_are_refused_by_name(model):
    truncate(model / "model.safetensors")
    with pytest.raises(ModelRefError, match=r"sha256 mismatch for model\.safetensors"):
        load_model(str(model), "float32")


def test_a_manifest_edited_to_drop_the_weights_is_refused(model, tmp_path, tokenizer):
    other = make_tiny_model(tmp_path / "other", tokenizer, seed=7)
    shutil.copy(other / "model.safetensors", model / "model.safetensors")  # swapped weights ...
    edit_manifest(model, lambda m: m["files"].pop("model.safetensors"))  # ... and their entry dropped
    with pytest.raises(ModelRefError, match=r"model\.safetensors not listed in its manifest"):
        load_model(str(model), "float32")


def test_an_added_weight_shard_is_refused_but_a_readme_is_not(model):
    (model / "README.md").write_text("notes added after the manifest\n")
    assert load_model(str(model), "float32").model_id == "tiny-llama:test"
    shutil.copy(model / "model.safetensors", model / "model-00002-of-00002.safetensors")
    with pytest.raises(ModelRefError, match=r"model-00002-of-00002\.safetensors not listed"):
        load_model(str(model), "float32")


def test_a_manifest_with_an_edited_digest_names_the_file(model):
    edit_manifest(model, lambda m: m["files"].update({"tokenizer.json": "0" * 64}))
    with pytest.raises(ModelRefError, match=r"sha256 mismatch for tokenizer\.json"):
        load_model(str(model), "float32")


@pytest.mark.parametrize("path", ["../outside.bin", "/etc/hostname"])
def test_a_manifest_listing_files_outside_its_directory_is_refused(model, path):
    edit_manifest(model, lambda m: m["files"].update({path: "0" * 64}))
    with pytest.raises(ModelRefError, match=f"outside its directory: {path}"):
        load_model(str(model), "float32")


@pytest.mark.slow  # a fresh home: the CLI sets up its registry first
def test_a_corrupted_registry_version_is_refused_by_the_cli(tmp_path, tiny_dir):
    home = tmp_path / "home"
    done = chatloop("models", "import", str(tiny_dir), "--name", "tiny", home=home)
    assert done.returncode == 0, done.stderr
    stored = home / "models" / "tiny" / "1" / "model.safetensors"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the middle of the tensors
    stored.unlink()  # the stored file is a hard link to the source: corrupt only the version's copy
    stored.write_bytes(bytes(data))
    r = chatloop("generate", "--model", "tiny:1", "--prompt", "hi", "--max-tokens", "2", home=home)
    assert r.returncode == 2
    reason = r.stderr.strip().splitlines()[-1]
    assert reason.startswith("error:") and str(stored.parent) in reason and "model.safetensors" in reason


def test_a_runs_truncated_final_is_refused_for_serving_and_as_a_parent(tmp_path, tiny_dir):
    home = tmp_path / "home"
    final = shutil.copytree(tiny_dir, home / "runs" / "my-sft" / "final")
    write_manifest(final, name="my-sft", version="sft-step8", stage="sft")
    truncate(final / "model.safetensors", keep=0.9)
    r = chatloop("generate", "--model", "runs:my-sft", "--prompt", "hi", home=home)
    assert r.returncode == 2 and "sha256 mismatch for model.safetensors" in r.stderr.splitlines()[-1]
    config = tmp_path / "dpo.yaml"
    config.write_text(yaml.safe_dump({"run_name": "dpo-x", "model": "runs:my-sft", "data": ["synthetic:pairs:20:mix"],
                                      "max_steps": 1}))
    r = chatloop("train", "dpo", "--config", str(config), "--out", str(tmp_path / "dpo"), home=home)
    assert r.returncode == 2 and str(final) in r.stderr and "model.safetensors" in r.stderr.splitlines()[-1]


def test_a_truncated_gguf_is_refused_by_name(tmp_path):
    from chatloop.models.refs import bundled_gguf

    broken = tmp_path / "broken.gguf"
    with open(bundled_gguf(), "rb") as f:
        broken.write_bytes(f.read(1 << 16))  # the header and part of the tensor index
    r = chatloop("generate", "--model", str(broken), "--prompt", "hi", home=tmp_path / "home")
    assert r.returncode == 2 and str(broken) in r.stderr.splitlines()[-1]


def test_resume_from_a_damaged_trl_checkpoint_names_the_file_and_the_fallback(tmp_path, tiny_dir):
    from chatloop.train.config import load_config
    from chatloop.train.reward import RewardStageConfig, run

    config = tmp_path / "reward.yaml"
    config.write_text(yaml.safe_dump({
        "run_name": "reward-damaged", "seed": 2, "model": str(tiny_dir), "data": ["synthetic:pairs:24:mix"],
        "max_steps": 4, "save_every": 2, "batch_size": 4, "max_length": 64, "eval_fraction": 0.0, "threads": 1,
        "trl": {"lr_scheduler_type": "constant"},  # the last step moves the weights
    }))
    cfg = load_config(RewardStageConfig, config)
    out = tmp_path / "run"
    run(cfg, out, resume=False)
    reference = load_file(out / "final" / "model.safetensors")
    older, newest = complete_checkpoints(out / "checkpoints")
    truncate(newest / "optimizer.pt")
    with pytest.raises(CheckpointError, match=r"optimizer\.pt") as err:
        run(cfg, out, resume=True)
    assert f"{older.name} still verifies: delete {newest}" in str(err.value)
    shutil.rmtree(newest)  # what the message says to do: resume from the older one
    run(cfg, out, resume=True)
    resumed = load_file(out / "final" / "model.safetensors")
    assert all(resumed[k].equal(reference[k]) for k in reference), "resuming from step 2 did not reproduce step 4"
