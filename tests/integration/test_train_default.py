"""The shipped LoRA preset for the default model runs (shortened) and its merged output serves."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_default_lora_sft_preset_merges_and_loads(tmp_path, default_dir):
    from chatloop.models.loading import load_model
    from chatloop.models.manifest import verify_manifest
    from chatloop.train.config import load_config
    from chatloop.train.sft import SFTStageConfig, run

    cfg = load_config(SFTStageConfig, ROOT / "configs" / "default" / "sft.yaml",
                      ["max_steps=2", "batch_size=2", "grad_accum=1", "eval_fraction=0", "data=[synthetic:sft:40:mix]"])
    assert cfg.lora.enabled
    run(cfg, tmp_path / "run", resume=False)
    final = tmp_path / "run" / "final"
    manifest = verify_manifest(final)
    assert manifest["parent"].startswith("smollm2-135m-instruct:")
    ours, base = load_file(final / "model.safetensors"), load_file(default_dir / "model.safetensors")
    assert not any("lora" in k for k in ours)
    changed = [k for k in base if k in ours and not torch.equal(ours[k], base[k])]
    assert changed and all(any(m in k for m in cfg.lora.target_modules) for k in changed)
    assert load_model(str(final), "float32").model.config.model_type == "llama"
