"""Evaluation: the project's own suites (capability, sycophancy), scoring with bootstrap intervals,
paired comparison of two models, and the release gate's decision. docs/evaluation.md has the details.

    chatloop eval --model default --suite sycophancy --json

    from chatloop.evals import compare, decide, evaluate
    report = evaluate(engine)                       # {"model", "suites": {name: report}, ...}
    verdict = decide(evaluate(candidate), evaluate(stable))

Modules: `schema.py` (item schema, suite files in `suites/`), `checkers.py` (answer checks),
`scoring.py` (records and reports), `stats.py` (bootstrap), `runner.py` (running on an Engine),
`compare.py` (paired comparison, reward-model judge), `gate.py` (thresholds, decision), `cli.py`
(the command). No torch at import time: the engine and the reward model load inside functions.
"""

from importlib import import_module

# Resolved on first use, so that `chatloop --help` (which mounts the eval command) stays quick.
_EXPORTS = {
    "SUITES": "chatloop.evals.schema", "load_suite": "chatloop.evals.schema",
    "evaluate": "chatloop.evals.runner", "evaluate_with": "chatloop.evals.runner",
    "compare": "chatloop.evals.compare", "RewardJudge": "chatloop.evals.compare",
    "decide": "chatloop.evals.gate", "GateThresholds": "chatloop.evals.gate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'chatloop.evals' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
