"""A short soak through `chatloop bench load --json`: a few virtual users' mixed traffic (streamed
chats, regenerations with a preference, thumbs, /v1 with the openai client, clients that leave
mid-stream, reading) against a server on a tiny model for about a minute and a half. Nothing
fails, every kind of traffic ran, and the server's memory stays flat. The 30-minute soak on the
default model is the same command with `--minutes 30` (README)."""

import json
import subprocess
import sys

import pytest
from conftest import make_tiny_model

pytestmark = pytest.mark.slow

KINDS = {"account", "new_chat", "chat", "regenerate", "comparison", "feedback", "v1", "v1_stream", "disconnect",
         "browse"}


def test_a_short_soak_has_no_failures_and_flat_memory(tmp_path, tokenizer):
    model = make_tiny_model(tmp_path / "tiny", tokenizer, context=2048)
    proc = subprocess.run([sys.executable, "-m", "chatloop", "bench", "load", "--users", "4", "--minutes", "1.5",
                           "--model", str(model), "--max-tokens", "8", "--json"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert report["failed"] == 0, report["failure_samples"]
    assert report["ok"] >= 40 and set(report["by_kind"]) == KINDS, report["by_kind"]
    assert report["disconnects"] > 0 and report["by_kind"]["disconnect"]["failed"] == 0
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] <= report["latency_ms"]["p99"]
    assert report["ttft_ms"]["p50"] is not None and report["tokens_per_s"] > 0
    rss = report["rss"]
    assert len(rss["samples"]) >= 30
    assert abs(rss["drift_pct"]) < 10, rss  # flat after warm-up
