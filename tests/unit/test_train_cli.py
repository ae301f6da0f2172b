"""`chatloop train`: stages listed, config help printed, bad input exits 2 with a one-line reason."""

from typer.testing import CliRunner

from chatloop.cli import app

runner = CliRunner()


def test_train_help_lists_every_stage():
    out = runner.invoke(app, ["train", "--help"])
    assert out.exit_code == 0
    for stage in ("tokenizer", "pretrain", "sft", "reward", "dpo", "kto", "grpo"):
        assert stage in out.output


def test_help_config_lists_fields_with_help():
    out = runner.invoke(app, ["train", "dpo", "--help-config"])
    assert out.exit_code == 0
    assert "beta (float, default 0.1): Strength of the KL pull" in out.output
    assert "lora.r (int, default 16): LoRA rank." in out.output


def test_bad_config_exits_2_with_reason(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_name: x\nmodel: default\ndata: [a.jsonl]\nmax_steps: -3\n")
    out = runner.invoke(app, ["train", "sft", "--config", str(bad)])
    assert out.exit_code == 2
    assert "field 'max_steps'" in out.output
    missing = runner.invoke(app, ["train", "sft"])
    assert missing.exit_code == 2 and "--config" in missing.output
