"""`chatloop bench train` measures what it claims: tokens/s and MFU against a peak it measures."""

import subprocess
import sys

from chatloop.bench.train import run_train_bench


def test_bench_train_reports_consistent_figures():
    r = run_train_bench(steps=1, batch_size=2, seq_len=64)
    assert 8e6 < r["params"] < 12e6
    assert r["tokens_per_s"] > 0 and r["matmul_peak_flops_per_s"] > 1e9
    assert abs(r["mfu"] - r["achieved_flops_per_s"] / r["matmul_peak_flops_per_s"]) < 1e-3
    assert 0 < r["mfu"] < 1.5


def test_bench_train_help_is_registered():
    out = subprocess.run([sys.executable, "-m", "chatloop", "bench", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--json" in out.stdout
