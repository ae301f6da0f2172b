"""The feedback export: what users said about answers, as training data (`chatloop data export`).

    rows, report = export(session, "kto", since=datetime(2025, 1, 1, tzinfo=UTC))
    report = export_file(session, "pairs", Path("pairs.jsonl"))   # + report.snapshot (sha256)

Three kinds (the JSONL rows of docs/training.md, valid for `schemas.read_dataset`):

- `kto`: every thumb, `{"prompt", "completion", "label"}` (up: true, down: false);
- `pairs`: every comparison (a pick among regenerated answers, or a side-by-side vote),
  `{"prompt", "chosen", "rejected"}`;
- `sft`: every correction (the prompt and the corrected answer) and every thumbed-up answer,
  `{"messages": [...prompt, answer]}`.

The prompt is exactly what the model saw when it answered: the system prompt recorded on the
answer (else the custom instructions recorded on it), then the branch from the root to the
answer's parent without the `context_dropped` oldest messages, as `store.conversations.read_turn`
built it. Only feedback of users who allow training is read (`store.training_data`), and only
conversations whose owner allows it. Feedback is selected by when it was given (`since` inclusive,
`until` exclusive) and by the model version of its answer (either side, for a pair); answers that
did not complete, identical rows and rows that cannot be rebuilt are skipped and counted, and
every message text is scrubbed of e-mail addresses, phone numbers and secrets (`scrub.py`).

Rows come sorted by their JSON line, so the same database state always gives the same file;
`write_jsonl` writes it atomically and returns the sha256 of its bytes, the snapshot a training
run records as lineage.
"""

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from chatloop.data import scrub
from chatloop.errors import UsageError
from chatloop.fsutil import atomic_write_text, sha256_file
from chatloop.store.conversations import branch, effective_system
from chatloop.store.models import Message
from chatloop.store.training_data import consenting_conversations, training_feedback, withheld_feedback

KINDS = ("sft", "pairs", "kto")
# Why feedback did not become a row, in the order the checks run (the first that applies counts).
SKIP_REASONS = (
    "opted_out",  # the user who gave it, or the conversation's owner, does not allow training
    "model_version",  # its answer (neither answer, for a pair) is of another model version
    "streaming", "stopped", "error", "interrupted",  # an answer's status is not `complete`
    "tool_calls",  # the answer called tools: its text alone is not what the model wrote
    "empty",  # the answer (or the correction) has no text
    "no_prompt",  # the branch cannot be rebuilt (a missing message, an inconsistent context_dropped)
    "prompt_mismatch",  # the two answers of a pair were given different prompts
    "duplicate",  # the same row (after scrubbing) was already exported
)
# The feedback each kind is built from, as `withheld_feedback` counts it.
_SOURCES = {"kto": ("thumbs_up", "thumbs_down"), "pairs": ("comparisons",),
            "sft": ("thumbs_up", "corrections")}
_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}  # str.splitlines() splits on them


@dataclass
class ExportReport:
    kind: str
    since: datetime | None = None
    until: datetime | None = None
    model_versions: list[str] = field(default_factory=list)
    rows: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    scrubbed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(scrub.KINDS, 0))
    out: str | None = None
    snapshot: str | None = None  # sha256 of the written file

    def as_dict(self) -> dict:
        return {"kind": self.kind, "out": self.out, "rows": self.rows, "snapshot": self.snapshot,
                "skipped": dict(self.skipped), "scrubbed": dict(self.scrubbed),
                "since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None,
                "model_versions": list(self.model_versions)}


def parse_when(text: str, *, end: bool = False, option: str = "--since") -> datetime:
    """`YYYY-MM-DD` (midnight UTC; with `end`, the next midnight, so the day is included) or an
    ISO 8601 timestamp (UTC unless it names a zone), as an aware UTC datetime."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            day = datetime.fromisoformat(text.strip()).replace(tzinfo=UTC)
            return day + timedelta(days=1) if end else day
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{option} must be a date (YYYY-MM-DD) or an ISO timestamp, not {text!r}") from None
    return _utc(when)


def _utc(when: datetime | None) -> datetime | None:
    """Aware UTC; naive values (SQLite returns them; users may pass them) are taken as UTC."""
    if when is None:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _version_filter(model_versions: Iterable[str] | None):
    """None (no filter), or a test of a model version: `NAME:VERSION` matches exactly, `NAME`
    every version of that name."""
    wanted = [v for v in (model_versions or []) if v]
    if not wanted:
        return None

    def matches(version: str | None) -> bool:
        return version is not None and any(
            version == w or (":" not in w and version.split(":", 1)[0] == w) for w in wanted)
    return matches


def seen_prompt(answer: Message, messages: dict[str, Message]) -> list[dict] | None:
    """The messages the model was given when it wrote `answer` (None if they cannot be rebuilt):
    its recorded system message, then the branch up to its parent as `read_turn` listed it, less
    the `context_dropped` oldest; only user and assistant turns with text."""
    path = branch(messages, answer.parent_id)
    if not path or path[0].parent_id is not None or path[-1].role != "user":
        return None  # a broken chain, or not an answer to a user message
    history = [m for m in path if m.role == "user" or m.content]  # as read_turn builds it
    dropped = answer.context_dropped or 0
    if dropped < 0 or dropped >= len(history):
        return None
    turns = [{"role": m.role, "content": m.content} for m in history[dropped:]
             if m.role in ("user", "assistant") and m.content]
    if not turns or turns[-1]["role"] != "user":
        return None
    system = effective_system(answer.system_prompt or "", answer.custom_instructions or "")
    return ([{"role": "system", "content": system}] if system else []) + turns


@dataclass
class _Item:
    """One piece of feedback on its way to a row."""

    answers: tuple[Message, ...]  # the answer (kto, sft) or (chosen, rejected)
    completions: tuple[str, ...]  # the text to train on for each answer
    label: bool | None = None  # kto only
    own_text: tuple[bool, ...] = ()  # whether each completion is the answer's own text (not a correction)


def _items(s: Session, kind: str, since: datetime | None, until: datetime | None) -> list[_Item]:
    data = training_feedback(s, since)

    def in_range(created: datetime) -> bool:
        return until is None or _utc(created) < until

    if kind == "kto":
        return [_Item((m,), (m.content,), f.rating > 0, (True,))
                for f, m in data.ratings if in_range(f.created_at)]
    if kind == "pairs":
        return [_Item((a, b), (a.content, b.content), None, (True, True))
                for c, a, b in data.comparisons if in_range(c.created_at)]
    liked = [(f.created_at, _Item((m,), (m.content,), None, (True,)))
             for f, m in data.ratings if f.rating > 0]
    fixed = [(c.created_at, _Item((m,), (c.content,), None, (False,))) for c, m in data.corrections]
    return [item for created, item in liked + fixed if in_range(created)]


def _precheck(item: _Item, version_ok) -> str | None:
    """The reason to skip `item` that needs no conversation, or None."""
    if version_ok is not None and not any(version_ok(a.model_version) for a in item.answers):
        return "model_version"
    for answer in item.answers:
        if answer.status != "complete":
            return answer.status  # streaming, stopped, error, interrupted
    for answer, text, own in zip(item.answers, item.completions, item.own_text):
        if own and answer.tool_calls:
            return "tool_calls"
        if not text.strip():
            return "empty"
    return None


def _row(kind: str, prompt: list[dict], item: _Item) -> dict:
    said = [{"role": "assistant", "content": text} for text in item.completions]
    if kind == "kto":
        return {"prompt": prompt, "completion": said[0], "label": bool(item.label)}
    if kind == "pairs":
        return {"prompt": prompt, "chosen": said[0], "rejected": said[1]}
    return {"messages": prompt + said}


def _scrub_row(row: dict, memo: dict[str, tuple[str, dict]]) -> tuple[dict, Counter]:
    """`row` with every message text scrubbed, and the replacements made; `memo` remembers texts
    already scrubbed (a conversation's turns recur in the prompts of its later answers)."""
    counts: Counter = Counter()

    def clean(message: dict) -> dict:
        if message["content"] not in memo:
            memo[message["content"]] = scrub.scrub(message["content"])
        text, found = memo[message["content"]]
        counts.update(found)
        return {**message, "content": text}

    out = {}
    for key, value in row.items():
        if isinstance(value, list):
            value = [clean(m) for m in value]
        elif isinstance(value, dict):
            value = clean(value)
        out[key] = value
    return out, counts


def dumps_row(row: dict) -> str:
    """One JSONL line (no newline): UTF-8 text, sorted keys, and the line separators that
    `str.splitlines` would break on escaped."""
    return json.dumps(row, ensure_ascii=False, sort_keys=True).translate(_LINE_BREAKS)


def export(s: Session, kind: str, since: datetime | None = None, until: datetime | None = None,
           model_versions: Iterable[str] | None = None) -> tuple[list[dict], ExportReport]:
    """The training rows of `kind` (scrubbed, deduplicated, in a stable order) and a report of what
    was skipped and scrubbed. `since`/`until` bound when the feedback was given."""
    if kind not in KINDS:
        raise UsageError(f"unknown export kind {kind!r}: choose one of {', '.join(KINDS)}")
    since, until = _utc(since), _utc(until)
    if since is not None and until is not None and since >= until:
        raise UsageError("since must be before until")
    report = ExportReport(kind, since, until, sorted({v for v in model_versions or [] if v}))
    withheld = withheld_feedback(s, since, until)
    report.skipped["opted_out"] = sum(withheld[k] for k in _SOURCES[kind])

    version_ok = _version_filter(model_versions)
    items = []
    for item in _items(s, kind, since, until):
        reason = _precheck(item, version_ok)
        if reason:
            report.skipped[reason] = report.skipped.get(reason, 0) + 1
        else:
            items.append(item)
    conversations = consenting_conversations(s, (a.conversation_id for item in items for a in item.answers))

    lines: dict[str, dict] = {}
    memo: dict[str, tuple[str, dict]] = {}
    for item in items:
        messages = [conversations.get(a.conversation_id) for a in item.answers]
        if any(m is None for m in messages):
            report.skipped["opted_out"] += 1
            continue
        prompts = [seen_prompt(a, m) for a, m in zip(item.answers, messages)]
        if any(p is None for p in prompts):
            report.skipped["no_prompt"] += 1
            continue
        if any(p != prompts[0] for p in prompts[1:]) or len({a.parent_id for a in item.answers}) > 1:
            report.skipped["prompt_mismatch"] += 1
            continue
        row, counts = _scrub_row(_row(kind, prompts[0], item), memo)
        line = dumps_row(row)
        if line in lines:
            report.skipped["duplicate"] += 1
            continue
        lines[line] = row
        for k in scrub.KINDS:
            report.scrubbed[k] += counts[k]
    rows = [lines[line] for line in sorted(lines)]
    report.rows = len(rows)
    return rows, report


def write_jsonl(rows: list[dict], path: Path) -> str:
    """Write `rows` as JSONL (one `dumps_row` line each, in the given order) atomically; return the
    sha256 of the file's bytes."""
    atomic_write_text(path, "".join(dumps_row(row) + "\n" for row in rows))
    return sha256_file(path)


def export_file(s: Session, kind: str, out: Path, since: datetime | None = None,
                until: datetime | None = None, model_versions: Iterable[str] | None = None) -> ExportReport:
    """`export` written to `out`; the report carries the path and the snapshot hash."""
    rows, report = export(s, kind, since, until, model_versions)
    report.snapshot = write_jsonl(rows, out)
    report.out = str(out)
    return report
