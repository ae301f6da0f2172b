"""The disk fills up while a training checkpoint is written: the run stops with one clear error
(exit 1, naming the checkpoint and "no space left"), the previous checkpoint still verifies, nothing
half-written is left, and once there is space again `--resume` finishes with the weights of an
uninterrupted run. The run directory is a small tmpfs (needs root, or a mount namespace).
"""

import subprocess

import pytest
import yaml
from killer import cli, env
from safetensors.torch import load_file

from chatloop.fsutil import free_bytes
from chatloop.train.checkpoints import complete_checkpoints, verify_checkpoint

MIB = 1 << 20


@pytest.fixture()
def small_disk(tmp_path):
    """(mount point, resize(mib)): a tmpfs that starts at 1 MiB."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the disk-full test (needs root): {done.stderr.strip()}")

    def resize(mib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={mib}m", str(disk)], check=True)

    yield disk, resize
    subprocess.run(["umount", "-l", str(disk)], check=False)


def tree_size(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.slow
def test_disk_full_during_a_checkpoint_save_is_one_clear_error_and_resume_works(tmp_path, tiny_dir, small_disk):
    from chatloop.train.config import load_config
    from chatloop.train.reward import RewardStageConfig, run

    config = tmp_path / "reward.yaml"
    config.write_text(yaml.safe_dump({
        "run_name": "reward-full", "seed": 3, "model": str(tiny_dir), "data": ["synthetic:pairs:40:mix"],
        "max_steps": 6, "save_every": 2, "batch_size": 4, "max_length": 64, "eval_fraction": 0.0, "threads": 1,
        "logging_steps": 1,
    }))
    reference = tmp_path / "ref"
    run(load_config(RewardStageConfig, config), reference, resume=False)
    checkpoint = tree_size(complete_checkpoints(reference / "checkpoints")[0])
    rest = tree_size(reference) - tree_size(reference / "checkpoints") - tree_size(reference / "final")

    disk, resize = small_disk
    resize((rest + checkpoint * 3 // 2) // MIB + 2)  # room for the first checkpoint, not for the second
    out = disk / "run"
    failed = subprocess.run(cli("reward", config, out), env=env(), capture_output=True, text=True, timeout=600,
                            check=False)
    assert failed.returncode == 1, failed.stderr[-3000:]
    reason = failed.stderr.strip().splitlines()[-1]
    second = out / "checkpoints" / "step-00000004"
    assert reason.startswith("error: no space left on device while saving checkpoint"), reason
    assert str(second) in reason and "step-00000002 is intact" in reason and "--resume" in reason, reason
    [first] = complete_checkpoints(out / "checkpoints")
    assert first.name == "step-00000002"
    verify_checkpoint(first)
    assert not list((out / "checkpoints").glob(".step-*")), "the half-written checkpoint was not removed"
    assert free_bytes(disk) > checkpoint // 3, "the staging directory's space was not given back"

    resize((rest + checkpoint * 4 + tree_size(reference / "final")) // MIB + 8)  # space is back
    resumed = subprocess.run(cli("reward", config, out, "--resume"), env=env(), capture_output=True, text=True,
                             timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "step-00000002" in resumed.stderr
    ours, theirs = load_file(out / "final" / "model.safetensors"), load_file(reference / "final" / "model.safetensors")
    assert all(ours[k].equal(theirs[k]) for k in theirs), "the resumed run's weights differ from the uninterrupted one"
