"""Stage configs, parent models and checkpoint sealing: overrides, clear errors, verification, stray
staging dirs."""

from pathlib import Path

import pytest

from chatloop.errors import UsageError
from chatloop.train.checkpoints import (
    CheckpointError, clean_staging, complete_checkpoints, latest_checkpoint, save_checkpoint,
)
from chatloop.train.config import describe, load_config
from chatloop.train.pretrain import PretrainConfig


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_set_overrides_nested_fields_with_yaml_typing(tmp_path):
    path = _yaml(tmp_path, "run_name: r\ntokenizer: default\ndata: [a.txt]\n")
    cfg = load_config(PretrainConfig, path, ["optim.lr=1e-3", "max_steps=7", "model.tie_embeddings=false"])
    assert cfg.optim.lr == 1e-3 and cfg.max_steps == 7 and cfg.model.tie_embeddings is False


def test_config_errors_name_file_and_field(tmp_path):
    path = _yaml(tmp_path, "run_name: r\ntokenizer: default\ndata: [a.txt]\nmodel: {hidden_sise: 3}\n")
    with pytest.raises(UsageError, match=r"c\.yaml: field 'model\.hidden_sise'"):
        load_config(PretrainConfig, path)
    with pytest.raises(UsageError, match="key=value"):
        load_config(PretrainConfig, _yaml(tmp_path, "run_name: r\ntokenizer: x\ndata: []\n"), ["novalue"])


def test_yaml_errors_are_one_line(tmp_path):
    with pytest.raises(UsageError) as e:
        load_config(PretrainConfig, _yaml(tmp_path, "a: [1, 2\nb: 3\n"))
    assert "\n" not in str(e.value) and "(line 2, column 2)" in str(e.value)
    with pytest.raises(UsageError) as e:
        load_config(PretrainConfig, _yaml(tmp_path, "run_name: r\n"), ["max_steps=[1,"])
    assert "\n" not in str(e.value) and "max_steps" in str(e.value)


@pytest.mark.parametrize("text, field", [
    ("gate: {dtype: float64}\n", "field 'gate.dtype': unknown dtype 'float64'"),
    ("method: dpo\ntrain: {max_steps: abc}\n", "train: field 'max_steps': Input should be a valid integer"),
    ("train: {lora: {enabld: true}}\n", "train: field 'lora.enabld'"),
])
def test_a_flywheel_config_is_checked_whole_before_any_work(tmp_path, text, field):
    """Its training stage's fields and its gate too: a typo there surfaced only after the export and
    the training run."""
    from chatloop.flywheel.config import FlywheelConfig

    with pytest.raises(UsageError) as e:
        load_config(FlywheelConfig, _yaml(tmp_path, text))
    assert field in str(e.value) and "\n" not in str(e.value)
    assert load_config(FlywheelConfig, _yaml(tmp_path, "method: dpo\ntrain: {max_steps: 3}\n")).train


def test_describe_lists_every_field_with_help():
    lines = describe(PretrainConfig)
    assert any(line.startswith("optim.lr (float, default 0.003): Peak learning rate") for line in lines)
    assert all(": " in line and not line.endswith(": ") for line in lines)


def test_runs_refs_point_at_final_of_a_run(tmp_path, monkeypatch):
    from chatloop.train.common import model_dir

    monkeypatch.setenv("CHATLOOP_HOME", str(tmp_path))
    (tmp_path / "runs" / "tiny-tokenizer" / "final").mkdir(parents=True)  # a tokenizer run: no model
    assert model_dir("runs:tiny-tokenizer") == tmp_path / "runs" / "tiny-tokenizer" / "final"
    with pytest.raises(UsageError, match="has that run finished"):
        model_dir("runs:tiny-sft")


def test_load_pretrained_names_the_parent_and_wraps_load_errors(tmp_path, tiny_dir):
    import torch
    from transformers import AutoModelForSequenceClassification

    from chatloop.train.common import load_pretrained
    from chatloop.train.hf import load_parent
    from chatloop.train.reward import load_reward_model

    model, tokenizer, parent = load_parent(str(tiny_dir))
    assert parent == "tiny-llama:test" and model.dtype == torch.float32 and tokenizer.pad_token is not None
    head, tokenizer, parent = load_reward_model(str(tiny_dir))
    assert parent == "tiny-llama:test" and head.config.num_labels == 1
    assert head.config.pad_token_id == tokenizer.pad_token_id
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="empty is not a Hugging Face model directory"):
        load_pretrained(str(tmp_path / "empty"), AutoModelForSequenceClassification)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')  # no weights
    with pytest.raises(UsageError, match="cannot load a model from .*broken"):
        load_pretrained(str(broken), AutoModelForSequenceClassification)


def _write(files: dict):
    def write(tmp: Path) -> None:
        for name, text in files.items():
            (tmp / name).write_text(text)
    return write


def test_checkpoints_are_sealed_pruned_and_verified(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, _write({"w.bin": f"weights {step}"}), keep=2)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    assert latest_checkpoint(tmp_path).name == "step-00000003"
    (tmp_path / "step-00000003" / "extra.txt").write_text("sneaked in")
    with pytest.raises(CheckpointError, match="unexpected files: extra.txt"):
        latest_checkpoint(tmp_path)


def test_tampered_missing_and_unreadable_checkpoints_are_refused(tmp_path):
    save_checkpoint(tmp_path, 1, _write({"a.bin": "a", "b.bin": "b"}), keep=2)
    ckpt = tmp_path / "step-00000001"
    (ckpt / "a.bin").write_text("A")
    (ckpt / "b.bin").unlink()
    with pytest.raises(CheckpointError, match=r"verification \(missing: b.bin; sha256 mismatch: a.bin\)"):
        latest_checkpoint(tmp_path)
    (ckpt / "COMPLETE.json").write_text('{"step": 1}')
    with pytest.raises(CheckpointError, match="unreadable completion marker"):
        latest_checkpoint(tmp_path)


def test_unsealed_and_staging_directories_are_ignored(tmp_path):
    save_checkpoint(tmp_path, 1, _write({"w.bin": "a"}), keep=2)
    (tmp_path / "step-00000005").mkdir()  # no completion marker: never a resume candidate
    stray = tmp_path / ".step-00000006.tmp-abc"
    stray.mkdir()
    assert latest_checkpoint(tmp_path).name == "step-00000001"
    clean_staging(tmp_path)
    assert not stray.exists()


def test_failed_write_leaves_no_checkpoint(tmp_path):
    def boom(tmp: Path) -> None:
        (tmp / "half.bin").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 1, boom, keep=2)
    assert list(tmp_path.iterdir()) == []
