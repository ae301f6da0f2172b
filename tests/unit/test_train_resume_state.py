"""The small pieces behind exact resume and clear storage errors (the end-to-end kill -9 and disk-full
tests are tests/integration/test_train_trl_resume.py and test_train_disk_full.py)."""

import errno
import json

import pytest

from chatloop.errors import StorageFull, UsageError
from chatloop.fsutil import out_of_space, reporting_full_disk
from chatloop.train.hf import run_loss


def test_grpo_sampler_order_depends_on_seed_and_epoch_only():
    """A process resumed in epoch 2 must draw epoch 2's prompt order, as TRL's sampler does on its
    third pass in an uninterrupted process (not its first pass's order)."""
    from trl.trainer.utils import RepeatSampler

    from chatloop.train.grpo import epoch_seeded

    def stock():
        return RepeatSampler(list(range(10)), mini_repeat_count=2, batch_size=5, repeat_count=2, seed=3)

    uninterrupted = stock()
    passes = [list(uninterrupted) for _ in range(3)]
    assert passes[0] != passes[2]
    resumed = epoch_seeded(stock())
    resumed.set_epoch(2)
    assert list(resumed) == passes[2]
    resumed.set_epoch(0)
    assert list(resumed) == passes[0]


def test_run_loss_weights_each_record_by_the_steps_it_covers():
    history = [{"step": 2, "loss": 1.0}, {"step": 3, "loss": 4.0}, {"step": 3, "train_runtime": 1.0},
               {"step": 6, "loss": 0.0}]
    assert run_loss(history) == pytest.approx((2 * 1.0 + 1 * 4.0 + 3 * 0.0) / 6)
    assert run_loss([{"step": 1, "train_runtime": 2.0}]) is None


def test_rewind_drops_later_steps_and_the_summary(tmp_path):
    from pydantic import BaseModel

    from chatloop.train.rundir import RunDir

    class Cfg(BaseModel):
        seed: int = 0

    run = RunDir(tmp_path / "run", Cfg(), stage="sft", resume=False)
    for record in ({"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 2, "summary": True, "train_loss": 1.7},
                   {"step": 3, "loss": 1.0}):
        run.log(record)
    with open(run.metrics_path, "a") as f:
        f.write('{"step": 4, "lo')  # a line cut short by kill -9
    run.rewind_metrics(2)
    kept = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "time"} for r in kept] == [{"step": 1, "loss": 2.0},
                                                                           {"step": 2, "loss": 1.5}]


def test_a_killed_final_staging_directory_is_removed_on_the_next_start(tmp_path):
    from pydantic import BaseModel

    from chatloop.train.rundir import RunDir

    class Cfg(BaseModel):
        seed: int = 0

    RunDir(tmp_path / "run", Cfg(), stage="sft", resume=False)
    (tmp_path / "run" / ".final.tmp-abc123").mkdir()
    RunDir(tmp_path / "run", Cfg(), stage="sft", resume=True)
    assert not list((tmp_path / "run").glob(".final.tmp-*"))


def test_a_write_that_hit_a_full_disk_becomes_one_storage_full_error(tmp_path):
    expected = r"^no space left on device while saving X \(.* MiB free on the filesystem of .*\); free it$"
    with pytest.raises(StorageFull, match=expected), reporting_full_disk(tmp_path, "saving X", "free it"):
        raise OSError(errno.ENOSPC, "No space left on device")
    wrapped = RuntimeError("PytorchStreamWriter failed")
    wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert out_of_space(wrapped, tmp_path)
    assert out_of_space(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
                        tmp_path)


def test_other_failures_pass_through_unchanged(tmp_path):
    with pytest.raises(RuntimeError, match="a bug"), reporting_full_disk(tmp_path, "saving X"):
        raise RuntimeError("a bug")  # this filesystem has room: not a full disk
    with pytest.raises(UsageError, match="bad input"), reporting_full_disk(tmp_path, "saving X"):
        raise UsageError("bad input")
