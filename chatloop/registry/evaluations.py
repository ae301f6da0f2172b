"""Evaluations of registered versions, and the release gate that compares a candidate with stable.

    decision = run_gate(db, "my-model", candidate="3", stable="2", dtype="auto")
    decision["passed"], decision["reasons"]

Each suite's report is stored per version (`eval_results`, with the hash of the items it scored
and the settings it ran with), so a version is evaluated once per suite version and setting: the
gate evaluates what is missing (the candidate, usually) and reuses the rest. `stored_gate` decides
from stored reports alone (the admin page's promote button), `run_gate` evaluates first. The
decision itself is chatloop/evals/gate.py's.
"""

import json
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from chatloop.models.manifest import model_id
from chatloop.registry.versions import get_version, resolved
from chatloop.store.db import Database
from chatloop.store.models import EvalResult

log = logging.getLogger(__name__)
GATE_SUITES = ("capability", "sycophancy")


def settings_key(dtype: str, limit: int | None) -> str:
    return f"dtype={dtype};limit={limit or 'all'}"


def _limit_of(settings: str) -> int | None:
    value = dict(part.split("=", 1) for part in settings.split(";")).get("limit", "all")
    return None if value == "all" else int(value)


def current_hash(suite: str, limit: int | None) -> str:
    """The hash of the items a suite scores today with `limit` (a stored result for other items is stale)."""
    from chatloop.evals.schema import load_suite, select as select_items, suite_hash

    return suite_hash(select_items(load_suite(suite), limit))


def save_report(s: Session, version_id: str, report: dict, settings: str) -> None:
    """Store each suite of an `evaluate` report for a version."""
    for suite, r in report["suites"].items():
        low, high = r["ci"] if r.get("ci") else (None, None)
        s.add(EvalResult(model_version=version_id, suite=suite, suite_hash=r["suite_hash"], settings=settings,
                         score=r["score"], n=int(r["n"]), ci_low=low, ci_high=high,
                         details=json.dumps(r, ensure_ascii=False)))


def stored_report(s: Session, version_id: str, settings: str) -> dict:
    """The newest stored result of each suite for a version run with `settings`, as an `evaluate`
    report ({"model", "suites"}), leaving out results for items the suites no longer have."""
    limit = _limit_of(settings)
    suites: dict[str, dict] = {}
    for row in s.scalars(select(EvalResult).where(EvalResult.model_version == version_id,
                                                  EvalResult.settings == settings)
                         .order_by(EvalResult.created_at.desc())):
        if row.suite not in suites and row.suite_hash == current_hash(row.suite, limit):
            suites[row.suite] = json.loads(row.details)
    return {"model": version_id, "settings": settings, "suites": suites}


def stored_results(s: Session, name: str, version: str) -> list[dict]:
    """Headline figures of a version's stored evaluations, newest first."""
    rows = s.scalars(select(EvalResult).where(EvalResult.model_version == model_id(name, version))
                     .order_by(EvalResult.created_at.desc()))
    return [{"suite": r.suite, "score": r.score, "n": r.n,
             "ci": [r.ci_low, r.ci_high] if r.ci_low is not None else None, "settings": r.settings,
             "suite_hash": r.suite_hash, "at": r.created_at.isoformat()} for r in rows]


def _decide(candidate: dict, stable: dict) -> dict:
    from chatloop.evals.gate import decide

    return decide(candidate, stable)


def stored_gate(s: Session, name: str, candidate: str, stable: str) -> dict | None:
    """The gate's decision from stored reports of both versions run with the same settings (the
    newest such), or None when no setting has every gate suite for both."""
    cand_id, stable_id = model_id(name, candidate), model_id(name, stable)
    settings = list(dict.fromkeys(s.scalars(select(EvalResult.settings).where(EvalResult.model_version == cand_id)
                                            .order_by(EvalResult.created_at.desc()))))
    for key in settings:
        cand, base = stored_report(s, cand_id, key), stored_report(s, stable_id, key)
        if all(suite in cand["suites"] and suite in base["suites"] for suite in GATE_SUITES):
            return {**_decide(cand, base), "settings": key}
    return None


def evaluate_version(db: Database, name: str, version: str, *, dtype: str, limit: int | None,
                     suites: tuple[str, ...] = GATE_SUITES) -> dict:
    """An `evaluate` report of `suites` for NAME:VERSION: stored results when their items and
    settings match, the rest evaluated now (and stored)."""
    from chatloop.engine.scheduler import Engine
    from chatloop.evals import evaluate

    settings = settings_key(dtype, limit)
    version_id = model_id(name, version)
    with db.session() as s:
        report = stored_report(s, version_id, settings)
        ref = resolved(get_version(s, name, version))
    missing = [suite for suite in suites if suite not in report["suites"]]
    if missing:
        log.info("evaluating %s on %s", version_id, ", ".join(missing))
        engine = Engine.start(ref, dtype)
        try:
            fresh = evaluate(engine, suites=missing, limit=limit)
        finally:
            engine.shutdown()
        with db.session() as s:
            save_report(s, version_id, fresh, settings)
        report["suites"].update(fresh["suites"])
    return report


def run_gate(db: Database, name: str, candidate: str, stable: str, *, dtype: str = "float32",
             limit: int | None = None) -> dict:
    """Evaluate both versions as needed and decide whether the candidate may replace stable."""
    base = evaluate_version(db, name, stable, dtype=dtype, limit=limit)
    cand = evaluate_version(db, name, candidate, dtype=dtype, limit=limit)
    scores = {label: {suite: {k: r.get(k) for k in ("score", "ci", "n", "flip_rate")} for suite, r in rep["suites"].items()}
              for label, rep in (("candidate", cand), ("stable", base))}
    return {**_decide(cand, base), "settings": settings_key(dtype, limit), "scores": scores}
