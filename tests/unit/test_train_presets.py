"""Every shipped preset parses into its stage's typed config, and the tiny chain is consistent."""

from pathlib import Path

import pytest

from chatloop.train.cli import STAGES
from chatloop.train.config import load_config

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted(p for p in (ROOT / "configs").glob("*/*.yaml") if p.stem in STAGES)


def _config(path: Path):
    import importlib

    module, cls = STAGES[path.stem]
    return load_config(getattr(importlib.import_module(module), cls), path)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_preset_parses(path):
    cfg = _config(path)
    assert cfg.run_name == f"{path.parent.name}-{path.stem}"


def test_tiny_presets_cover_every_stage_and_chain_through_runs():
    tiny = {p.stem: _config(p) for p in PRESETS if p.parent.name == "tiny"}
    assert set(tiny) == set(STAGES)
    order = ["tokenizer", "pretrain", "sft", "reward", "dpo", "kto", "grpo"]
    for stage in order[1:]:
        cfg = tiny[stage]
        parents = [getattr(cfg, "tokenizer", None), getattr(cfg, "model", None), getattr(cfg, "reward_model", None)]
        for ref in (r for r in parents if isinstance(r, str)):
            assert ref.startswith("runs:tiny-") and order.index(ref[len("runs:tiny-"):]) < order.index(stage)


def test_default_presets_use_lora():
    for stage in ("sft", "dpo", "kto"):
        assert _config(ROOT / "configs" / "default" / f"{stage}.yaml").lora.enabled


def test_the_flywheel_config_parses_and_its_train_fields_fit_the_stage():
    from chatloop.flywheel.config import FlywheelConfig
    from chatloop.train.dpo import DPOStageConfig
    from chatloop.train.kto import KTOStageConfig

    cfg = load_config(FlywheelConfig, ROOT / "configs" / "default" / "flywheel.yaml")
    stage = {"dpo": DPOStageConfig, "kto": KTOStageConfig}[cfg.method]
    trained = stage.model_validate({**cfg.train, "run_name": "t", "model": "m:1", "data": ["f.jsonl"]})
    assert trained.lora.enabled and cfg.canary_percent == 10
