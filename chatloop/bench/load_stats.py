"""What `chatloop bench load` measures and how it reports it (bench/load.py drives the traffic).

Every request ends in one outcome:
- `ok`: a 2xx whose stream, if any, ended properly (`done` / `data: [DONE]`);
- `rejected`: 429 or 503 *with* a `Retry-After` header: the server shedding load as designed, so
  counted apart and never as a failure (the virtual user waits as told, then goes on);
- `disconnect`: a client that left mid-stream on purpose (the server must shrug it off);
- `failed`: anything else, by status (`500`, `404`, ...) or by what broke (`transport`: the
  connection failed; `stream_error`: an error event; `stream_incomplete`: the stream ended early).

Latency runs from sending the request to its last byte; TTFT to the first streamed text. The
server's resident memory (VmRSS from /proc, Linux) is sampled through the run; its drift compares
the median of the last fifth of the samples with the median of the first fifth after warm-up.
"""

import statistics
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    if len(values) == 1:
        v = round(values[0], 1)
        return {"p50": v, "p95": v, "p99": v}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(q[49], 1), "p95": round(q[94], 1), "p99": round(q[98], 1)}


@dataclass
class Outcome:
    kind: str  # what the user did: chat, new_chat, regenerate, comparison, feedback, v1, v1_stream, disconnect,
    # browse, account (sign-up or sign-in, its API key)
    result: str  # ok | rejected | disconnect | failed
    status: str  # the HTTP status, or transport / stream_error / stream_incomplete
    latency_ms: float
    ttft_ms: float | None = None
    tokens: int = 0
    detail: str = ""


@dataclass
class Recorder:
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


def rss_kib(pid: int) -> int | None:
    """The process's resident memory in KiB (Linux /proc), None if it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """Samples a process's RSS every `every_s` seconds until stopped."""

    def __init__(self, pid: int | None, every_s: float):
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while self.pid is not None and not self._halt.is_set():
            kib = rss_kib(self.pid)
            if kib is not None:
                self.samples.append((round(time.monotonic() - self._t0, 1), round(kib / 1024, 1)))
            self._halt.wait(self.every_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def summary(self, warmup_s: float) -> dict:
        if not self.samples:
            return {"pid": self.pid, "samples": [], "start_mib": None, "end_mib": None, "max_mib": None,
                    "drift_pct": None, "note": "no samples (no server process to watch: pass --pid with --url)"}
        steady = [mib for t, mib in self.samples if t >= warmup_s] or [mib for _, mib in self.samples]
        fifth = max(1, len(steady) // 5)
        start, end = statistics.median(steady[:fifth]), statistics.median(steady[-fifth:])
        return {"pid": self.pid, "samples": self.samples, "start_mib": start, "end_mib": end,
                "max_mib": max(mib for _, mib in self.samples),
                "drift_pct": round((end - start) / start * 100, 2) if start else None}


def report(rec: Recorder, duration_s: float, rss: dict, meta: dict) -> dict:
    outcomes = rec.outcomes
    failures = Counter(o.status for o in outcomes if o.result == "failed")
    rejected = Counter(o.status for o in outcomes if o.result == "rejected")
    by_kind: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_kind[o.kind].append(o)
    tokens = sum(o.tokens for o in outcomes)
    done = [o for o in outcomes if o.result == "ok"]
    return {
        **meta,
        "duration_s": round(duration_s, 1),
        "requests": len(outcomes),
        "ok": len(done),
        "failed": sum(failures.values()),
        "failures": dict(sorted(failures.items())),
        "rejected": dict(sorted(rejected.items())),
        "disconnects": sum(1 for o in outcomes if o.result == "disconnect"),
        "requests_per_s": round(len(outcomes) / duration_s, 2) if duration_s else None,
        "latency_ms": percentiles([o.latency_ms for o in done]),
        "ttft_ms": percentiles([o.ttft_ms for o in done if o.ttft_ms is not None]),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / duration_s, 2) if duration_s else None,
        "by_kind": {kind: {"requests": len(items), "failed": sum(1 for o in items if o.result == "failed"),
                           "rejected": sum(1 for o in items if o.result == "rejected"),
                           **percentiles([o.latency_ms for o in items if o.result == "ok"])}
                    for kind, items in sorted(by_kind.items())},
        "failure_samples": [f"{o.kind} {o.status}: {o.detail}" for o in outcomes if o.result == "failed"][:5],
        "rss": rss,
    }


def print_table(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"chatloop bench load · {r['users']} users · {r['duration_s']} s · {r['model']}")
    for column in ("traffic", "requests", "failed", "rejected", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "traffic" else "right")
    for kind, k in r["by_kind"].items():
        table.add_row(kind, str(k["requests"]), str(k["failed"]), str(k["rejected"]),
                      *(f"{k[p]:.0f}" if k[p] is not None else "-" for p in ("p50", "p95", "p99")))
    lat, ttft = r["latency_ms"], r["ttft_ms"]
    table.add_row("all", str(r["requests"]), str(r["failed"]), str(sum(r["rejected"].values())),
                  *(f"{lat[p]:.0f}" if lat[p] is not None else "-" for p in ("p50", "p95", "p99")), style="bold")
    console.print(table)
    rss = r["rss"]
    ttft_text = " / ".join(f"{ttft[p]:.0f}" if ttft[p] is not None else "-" for p in ("p50", "p95", "p99"))
    lines = [
        (f"failures by status: {r['failures'] or 'none'}   rejections (Retry-After): {r['rejected'] or 'none'}   "
         f"disconnects on purpose: {r['disconnects']}"),
        (f"TTFT p50/p95/p99 {ttft_text} ms   {r['completion_tokens']} completion tokens, {r['tokens_per_s']} tok/s   "
         f"{r['requests_per_s']} requests/s"),
        (f"server RSS {rss['start_mib']} -> {rss['end_mib']} MiB (max {rss['max_mib']}), drift {rss['drift_pct']}% "
         f"over {len(rss['samples'])} samples" if rss["samples"] else f"server RSS: {rss.get('note')}"),
    ]
    for line in lines + [f"failure: {s}" for s in r["failure_samples"]]:
        console.print(line, markup=False, highlight=False)
