"""What the admin dashboard shows, computed from the stored rows.

    data = dashboard(s, days=30, releases={"m": {"stable": "1", "canary": "2", ...}})

- `daily`: per UTC day, active users (who sent a chat message or an API request), new
  conversations, messages, and completion tokens (chat answers and API requests);
- `versions`: per model version, answers, thumbs up and down, the thumbs-up rate with a 95% Wilson
  interval, latency / time-to-first-token percentiles and decode tokens/s of its answers;
- `canaries`: for each model name with a canary running, stable and canary side by side and the
  canary's win-rate in side-by-side votes against stable, with its interval.

Percentiles come from the answers of the window (at most `MAX_ROWS` of the newest).
"""

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from chatloop.store.models import Comparison, Conversation, Feedback, Message, UsageRecord

MAX_ROWS = 50_000


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (None when n is 0)."""
    if n == 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def percentiles(values: list[float], qs=(50, 95, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles."""
    ordered = sorted(v for v in values if v is not None)
    out = {}
    for q in qs:
        out[f"p{q}"] = ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))] if ordered else None
    return out


def _day(ts: datetime) -> str:
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC).date().isoformat()


def daily(s: Session, since: datetime, days: int) -> list[dict]:
    rows = {(since.date() + timedelta(days=i)).isoformat(): {"active_users": set(), "conversations": 0,
                                                              "messages": 0, "tokens": 0} for i in range(days + 1)}
    msgs = s.execute(select(Message.created_at, Message.role, Message.completion_tokens, Conversation.user_id)
                     .join(Conversation, Conversation.id == Message.conversation_id)
                     .where(Message.created_at >= since).order_by(Message.created_at.desc()).limit(MAX_ROWS))
    for created, role, tokens, user_id in msgs:
        day = rows.setdefault(_day(created), {"active_users": set(), "conversations": 0, "messages": 0, "tokens": 0})
        day["messages"] += 1
        day["tokens"] += tokens or 0
        if role == "user":
            day["active_users"].add(user_id)
    for created, user_id, tokens in s.execute(select(UsageRecord.created_at, UsageRecord.user_id,
                                                     UsageRecord.completion_tokens).where(UsageRecord.created_at >= since)
                                              .limit(MAX_ROWS)):
        day = rows.setdefault(_day(created), {"active_users": set(), "conversations": 0, "messages": 0, "tokens": 0})
        day["active_users"].add(user_id)
        day["tokens"] += tokens or 0
    for (created,) in s.execute(select(Conversation.created_at).where(Conversation.created_at >= since)):
        rows.setdefault(_day(created), {"active_users": set(), "conversations": 0, "messages": 0,
                                        "tokens": 0})["conversations"] += 1
    return [{"day": d, **{k: (len(v) if isinstance(v, set) else v) for k, v in r.items()}}
            for d, r in sorted(rows.items())]


def versions(s: Session, since: datetime) -> dict[str, dict]:
    stats: dict[str, dict] = defaultdict(lambda: {"answers": 0, "up": 0, "down": 0, "latency": [], "ttft": [],
                                                  "tok_s": []})
    answers = s.execute(select(Message.model_version, Message.latency_ms, Message.ttft_ms, Message.completion_tokens)
                        .where(Message.role == "assistant", Message.status == "complete",
                               Message.model_version.is_not(None), Message.created_at >= since)
                        .order_by(Message.created_at.desc()).limit(MAX_ROWS))
    for version, latency, ttft, tokens in answers:
        v = stats[version]
        v["answers"] += 1
        v["latency"].append(latency)
        v["ttft"].append(ttft)
        if latency and tokens and tokens > 1 and latency > (ttft or 0):
            v["tok_s"].append((tokens - 1) / ((latency - (ttft or 0)) / 1000))
    for version, rating, n in s.execute(select(Feedback.model_version, Feedback.rating, func.count())
                                        .where(Feedback.created_at >= since, Feedback.model_version.is_not(None))
                                        .group_by(Feedback.model_version, Feedback.rating)):
        stats[version]["up" if rating > 0 else "down"] += n
    out = {}
    for version, v in sorted(stats.items()):
        rated = v["up"] + v["down"]
        interval = wilson(v["up"], rated)
        out[version] = {
            "answers": v["answers"], "thumbs_up": v["up"], "thumbs_down": v["down"],
            "thumbs_up_rate": v["up"] / rated if rated else None, "thumbs_up_ci": list(interval) if interval else None,
            "latency_ms": percentiles(v["latency"]), "ttft_ms": percentiles(v["ttft"]),
            "tokens_per_s": percentiles(v["tok_s"], (50,))["p50"],
        }
    return out


def vote_record(s: Session, challenger: str, incumbent: str, since: datetime | None = None) -> dict:
    """Side-by-side votes between two versions: the challenger's wins, losses and win-rate."""
    stmt = select(Comparison.chosen_model_version, func.count()).where(
        Comparison.kind == "vote",
        ((Comparison.chosen_model_version == challenger) & (Comparison.rejected_model_version == incumbent))
        | ((Comparison.chosen_model_version == incumbent) & (Comparison.rejected_model_version == challenger)))
    if since is not None:
        stmt = stmt.where(Comparison.created_at >= since)
    counts = dict(s.execute(stmt.group_by(Comparison.chosen_model_version)).all())
    wins, losses = counts.get(challenger, 0), counts.get(incumbent, 0)
    interval = wilson(wins, wins + losses)
    return {"votes": wins + losses, "wins": wins, "losses": losses,
            "win_rate": wins / (wins + losses) if wins + losses else None,
            "win_rate_ci": list(interval) if interval else None}


def dashboard(s: Session, days: int, releases: dict[str, dict], now: datetime | None = None) -> dict:
    """Everything the dashboard shows for the last `days` days; `releases` maps a model name to its
    channels ({"stable", "canary", "canary_percent"}) as the server serves them."""
    now = now or datetime.now(UTC)
    since = datetime.combine(now.date() - timedelta(days=days - 1), datetime.min.time(), UTC)
    per_version = versions(s, since)
    canaries = []
    for name, ch in sorted(releases.items()):
        if not ch.get("canary"):
            continue
        stable, canary = f"{name}:{ch['stable']}", f"{name}:{ch['canary']}"
        canaries.append({"name": name, "percent": ch["canary_percent"], "stable": stable, "canary": canary,
                         "stable_stats": per_version.get(stable), "canary_stats": per_version.get(canary),
                         "votes": vote_record(s, canary, stable)})
    return {"days": days, "since": since.isoformat(), "daily": daily(s, since, days - 1),
            "versions": per_version, "canaries": canaries}


def daily_csv_rows(data: dict) -> list[list]:
    header = ["day", "active_users", "conversations", "messages", "tokens"]
    return [header] + [[d[k] for k in header] for d in data["daily"]]


def version_csv_rows(data: dict) -> list[list]:
    header = ["version", "answers", "thumbs_up", "thumbs_down", "thumbs_up_rate", "ci_low", "ci_high",
              "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms",
              "tokens_per_s"]
    rows = [header]
    for version, v in data["versions"].items():
        ci = v["thumbs_up_ci"] or [None, None]
        rows.append([version, v["answers"], v["thumbs_up"], v["thumbs_down"], v["thumbs_up_rate"], *ci,
                     *v["latency_ms"].values(), *v["ttft_ms"].values(), v["tokens_per_s"]])
    return rows
