"""`chatloop bench load`'s bookkeeping: 429/503 with Retry-After are rejections (not failures), the
report's counts and percentiles, and the RSS drift that skips the warm-up."""

import os

from chatloop.bench.load import _kind_of
from chatloop.bench.load_stats import Outcome, Recorder, RssSampler, percentiles, report, rss_kib


def test_only_429_and_503_with_retry_after_are_rejections():
    assert _kind_of(200, {}) == ("ok", 0.0) and _kind_of(201, {}) == ("ok", 0.0)
    assert _kind_of(429, {"retry-after": "3"}) == ("rejected", 3.0)
    assert _kind_of(503, {"retry-after": "120"}) == ("rejected", 10.0)  # waits at most 10 s
    assert _kind_of(503, {}) == ("failed", 0.0)  # overload without Retry-After breaks the contract
    assert _kind_of(500, {"retry-after": "1"}) == ("failed", 0.0)
    assert _kind_of(404, {}) == ("failed", 0.0)


def test_percentiles_of_known_values():
    values = [float(v) for v in range(101)]  # 0..100: the k-th percentile is k
    assert percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}


def test_the_report_counts_failures_by_status_apart_from_rejections_and_disconnects():
    rec = Recorder()
    for ms in (100, 200, 300):
        rec.add(Outcome("chat", "ok", "200", ms, ttft_ms=ms / 10, tokens=8))
    rec.add(Outcome("v1", "rejected", "503", 5))
    rec.add(Outcome("v1", "rejected", "429", 5))
    rec.add(Outcome("disconnect", "disconnect", "200", 50, ttft_ms=20))
    rec.add(Outcome("feedback", "failed", "500", 10, detail="internal server error"))
    rec.add(Outcome("chat", "failed", "stream_incomplete", 10))
    r = report(rec, 10.0, {"samples": []}, {"users": 2})
    assert (r["requests"], r["ok"], r["failed"], r["disconnects"]) == (8, 3, 2, 1)
    assert r["failures"] == {"500": 1, "stream_incomplete": 1} and r["rejected"] == {"429": 1, "503": 1}
    assert r["latency_ms"]["p50"] == 200.0 and r["ttft_ms"]["p50"] == 20.0  # successes only
    assert r["completion_tokens"] == 24 and r["tokens_per_s"] == 2.4 and r["users"] == 2
    assert r["by_kind"]["v1"] == {"requests": 2, "failed": 0, "rejected": 2, "p50": None, "p95": None, "p99": None}
    assert r["failure_samples"][0] == "feedback 500: internal server error"


def test_rss_drift_compares_the_first_and_last_fifth_after_warm_up():
    sampler = RssSampler(None, 1.0)
    sampler.samples = [(0.0, 900.0), (1.0, 100.0)] + [(float(t), 100.0 + (t - 2) * 1.0) for t in range(2, 12)]
    summary = sampler.summary(warmup_s=2.0)  # the 900 MiB loading spike is left out
    assert (summary["start_mib"], summary["end_mib"], summary["max_mib"]) == (100.5, 108.5, 900.0)
    assert summary["drift_pct"] == 7.96
    assert RssSampler(None, 1.0).summary(0)["drift_pct"] is None


def test_rss_of_this_process_is_read_from_proc():
    assert rss_kib(os.getpid()) > 1000
    assert rss_kib(2**22 + 12345) is None
