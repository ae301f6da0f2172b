"""The reward, DPO, KTO and GRPO stages keep the checkpoint contract: `kill -9` at random moments
(one while a checkpoint is written, one while final/ is written, after the last checkpoint), `--resume`
each time, and the final weights equal an uninterrupted run's bit for bit, as do the logged losses
and the final metrics.

Each case exercises the state such a resume has to restore: several epochs (the data order of
epoch N), LoRA with dropout (adapter weights, the RNG), gradient accumulation, and for GRPO
completions sampled from the policy and scored by a reward model, with a generation shared by two
optimizer steps so that checkpoints fall between a generation and the steps that use it.
"""

import json
import subprocess

import pytest
import yaml
from killer import cli, env, kill_repeatedly
from safetensors.torch import load_file

CASES = {
    # 40 pairs, 4 held out, batches of 4: 9 steps an epoch, so 24 steps cross two epoch boundaries
    "reward": {"data": ["synthetic:pairs:40:mix"], "max_steps": 24, "save_every": 3, "eval_fraction": 0.1},
    "dpo": {"data": ["synthetic:pairs:40:mix"], "max_steps": 12, "save_every": 2,
            "lora": {"enabled": True, "r": 8, "alpha": 16, "dropout": 0.1}},
    "kto": {"data": ["synthetic:kto:40:mix"], "max_steps": 12, "save_every": 2, "grad_accum": 2},
    # 6 prompts x 4 completions, one prompt a step, one generation for two steps: 6 steps an epoch
    "grpo": {"data": ["synthetic:prompts:6:mix"], "max_steps": 12, "save_every": 1, "exact_answer_weight": 0.0,
             "num_generations": 4, "max_completion_length": 8, "trl": {"steps_per_generation": 2}},
}
SEEDS = {"reward": 11, "dpo": 12, "kto": 13, "grpo": 14}
TIMING = ("runtime", "per_second", "_time")  # evaluate()'s wall-clock figures


def write_config(tmp_path, stage: str, tiny_dir) -> object:
    cfg = {"run_name": f"{stage}-kill", "seed": 5, "model": str(tiny_dir), "batch_size": 4, "lr": 1e-3,
           "warmup_steps": 2, "max_length": 64, "logging_steps": 1, "eval_fraction": 0.0, "threads": 1,
           **CASES[stage]}
    if stage == "grpo":
        cfg["reward_model"] = str(tiny_dir)  # a randomly initialised score head: rewards that vary
    path = tmp_path / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def losses(run_dir) -> list[tuple[int, float]]:
    records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def final_metrics(run_dir) -> dict:
    metrics = json.loads((run_dir / "final" / "manifest.json").read_text())["metrics"]
    return {k: v for k, v in metrics.items() if not any(t in k for t in TIMING)}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(CASES))
def test_resume_after_kill_matches_uninterrupted(stage, tmp_path, tiny_dir):
    config = write_config(tmp_path, stage, tiny_dir)
    ref = subprocess.run(cli(stage, config, tmp_path / "ref", "--json"), env=env(), capture_output=True, text=True,
                         timeout=600, check=False)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    report = kill_repeatedly(stage, config, out, kills=3, seed=SEEDS[stage], during_final=True)
    context = f"seed {report['seed']}: {report['stderr'][-2000:]}"
    assert report["returncode"] == 0, context
    assert report["kills"] == 3, f"the run finished before it was killed three times ({context})"
    assert report["killed_during_save"] and report["killed_during_final"] and not report["stray_staging"], report

    ours = load_file(out / "final" / "model.safetensors")
    theirs = load_file(tmp_path / "ref" / "final" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    differ = sorted(k for k in theirs if not ours[k].equal(theirs[k]))
    assert not differ, f"resumed {stage} weights differ from the uninterrupted run in {differ[:5]} ({context})"
    parent = load_file(tiny_dir / "model.safetensors")
    assert any(not ours[k].equal(parent[k]) for k in parent if k in ours), "training changed nothing: a vacuous test"

    steps = list(range(1, CASES[stage]["max_steps"] + 1))
    assert [s for s, _ in losses(out)] == steps, "each step is logged once"
    assert losses(out) == losses(tmp_path / "ref")
    assert final_metrics(out) == final_metrics(tmp_path / "ref")
    assert json.loads(ref.stdout)["step"] == CASES[stage]["max_steps"]


def test_dpo_with_a_synced_reference_model_resumes_exactly(tmp_path, tiny_dir):
    """`sync_ref_model` moves the reference model towards the policy every few steps; HF's checkpoint
    does not hold it, ours does: resuming between two syncs must not fall back to the parent."""
    import shutil

    from chatloop.train.config import load_config
    from chatloop.train.dpo import DPOStageConfig, run

    config = tmp_path / "dpo.yaml"
    config.write_text(yaml.safe_dump({
        "run_name": "dpo-sync", "seed": 5, "model": str(tiny_dir), "data": ["synthetic:pairs:40:mix"],
        "max_steps": 5, "save_every": 1, "keep_checkpoints": 10, "batch_size": 4, "lr": 1e-3, "warmup_steps": 1,
        "max_length": 64, "eval_fraction": 0.0, "threads": 1,
        "trl": {"sync_ref_model": True, "ref_model_sync_steps": 2, "ref_model_mixup_alpha": 0.5},
    }))
    cfg = load_config(DPOStageConfig, config)
    run(cfg, tmp_path / "ref", resume=False)
    resumed = shutil.copytree(tmp_path / "ref", tmp_path / "resumed")
    shutil.rmtree(resumed / "final")
    for later in ("step-00000004", "step-00000005"):  # as if killed during step 4, after the sync at 2
        shutil.rmtree(resumed / "checkpoints" / later)
    run(cfg, resumed, resume=True)
    ours = load_file(resumed / "final" / "model.safetensors")
    theirs = load_file(tmp_path / "ref" / "final" / "model.safetensors")
    assert all(ours[k].equal(theirs[k]) for k in theirs), "the resumed run trained against another reference model"
