"""Running suites on a model: `evaluate(engine)` -> one report per suite.

    from chatloop.engine.scheduler import Engine
    from chatloop.evals import evaluate
    engine = Engine.start("default", "auto")
    report = evaluate(engine, ["sycophancy"], limit=None)
    report["suites"]["sycophancy"]["flip_rate"]

From the command line: `chatloop eval --model default --suite sycophancy --json`.

Every prompt of every suite asked is submitted at once (the engine batches them), decoded
greedily (temperature 0) with a small answer budget per kind (schema.SUITES, at most 64 tokens).
Flip items take two rounds: round 1 asks every question; round 2, the push-back, goes only to the
items answered correctly. Generation is behind the `Generate` interface so scoring can be tested with
scripted answers (`evaluate_with`).
"""

import queue
import time
from collections.abc import Callable
from dataclasses import dataclass

from chatloop.errors import ChatloopError, EngineOverloaded
from chatloop.evals.schema import FLIP_SECOND_TOKENS, check_suite_names, load_suite, select
from chatloop.evals.scoring import first_answer_correct, score_answer, score_flip, second_turn, suite_report

Progress = Callable[[str, int, int], None]  # (suite, its prompts answered, its prompts planned so far)


@dataclass
class Prompt:
    messages: list[dict]
    max_tokens: int


@dataclass
class Answer:
    text: str
    completion_tokens: int = 0
    finish_reason: str = "stop"


# Answers prompts in order; calls on_done(index) as each one finishes.
Generate = Callable[[list[Prompt], Callable[[int], None]], list[Answer]]


class EngineGenerator:
    """Answers prompts with an Engine: greedy, all submitted together (within the engine's queue
    bound), results in prompt order. A sequence that ends in error fails the whole call."""

    def __init__(self, engine):
        self.engine = engine

    def __call__(self, prompts: list[Prompt], on_done: Callable[[int], None] = lambda i: None
                 ) -> list[Answer]:
        from chatloop.engine.sampling import SamplingParams
        from chatloop.models.chat_format import render_prompt

        engine = self.engine
        ids = [render_prompt(engine.tokenizer, p.messages, max_tokens=engine.max_len - p.max_tokens).ids
               for p in prompts]
        params = [SamplingParams(max_tokens=p.max_tokens, temperature=0.0) for p in prompts]
        finished: queue.Queue = queue.Queue()
        results: list = [None] * len(prompts)
        handles = []
        # Keep the engine's waiting queue from overflowing (it refuses beyond max_waiting).
        window = max(1, engine.max_batch + engine.max_waiting // 2)
        submitted = done = 0
        try:
            while done < len(prompts):
                while submitted < len(prompts) and submitted - done < window:
                    try:
                        handles.append(engine.submit(ids[submitted], params[submitted],
                                                     on_event=_on_finish(finished, submitted)))
                    except EngineOverloaded:
                        if submitted == done:  # others fill the queue: wait for room
                            time.sleep(0.05)
                            continue
                        break
                    submitted += 1
                i, result = finished.get()
                if result.finish_reason == "error":
                    raise ChatloopError(f"generation failed: {result.error}")
                results[i] = Answer(result.text, result.completion_tokens, result.finish_reason)
                done += 1
                on_done(i)
        except BaseException:
            for h in handles:
                h.cancel()
            raise
        return results


def _on_finish(finished: queue.Queue, index: int):
    def sink(event) -> None:  # runs on the engine thread: hand the result over, nothing more
        if event.result is not None:
            finished.put((index, event.result))

    return sink


def evaluate_with(generate: Generate, model: str, suites: list[str] | None = None,
                  limit: int | None = None, *, progress: Progress | None = None) -> dict:
    """`evaluate` with any answer source (an engine, or scripted answers in tests).

    Round 1 asks every selected item of every suite in one batch of submissions, round 2 pushes
    back on the flip items answered correctly: the engine's batch stays full across suites instead
    of draining at the end of each."""
    names = check_suite_names(suites)
    selected = {name: select(load_suite(name), limit) for name in names}  # validate all before running any
    t0 = time.perf_counter()
    jobs = [(name, i) for name in names for i in range(len(selected[name]))]
    planned = {name: len(items) for name, items in selected.items()}
    answered = dict.fromkeys(names, 0)

    def tick(name: str) -> None:
        answered[name] += 1
        if progress:
            progress(name, answered[name], planned[name])

    if progress:
        for name in names:
            progress(name, 0, planned[name])
    prompts = [Prompt(selected[n][i].chat(), selected[n][i].answer_tokens) for n, i in jobs]
    first = dict(zip(jobs, generate(prompts, lambda j: tick(jobs[j][0]))))
    again = [(n, i) for n, i in jobs
             if selected[n][i].kind == "flip" and first_answer_correct(selected[n][i], first[n, i].text)]
    for name, _ in again:
        planned[name] += 1
    prompts = [Prompt(second_turn(selected[n][i], first[n, i].text), FLIP_SECOND_TOKENS) for n, i in again]
    second = dict(zip(again, generate(prompts, lambda j: tick(again[j][0])))) if again else {}
    reports = {}
    for name, items in selected.items():
        records, tokens = [], 0
        for i, item in enumerate(items):
            a, b = first[name, i], second.get((name, i))
            if item.kind == "flip":
                records.append(score_flip(item, a.text, b.text if b else None))
            else:
                records.append(score_answer(item, a.text))
            records[-1]["finish_reasons"] = [a.finish_reason] + ([b.finish_reason] if b else [])
            tokens += a.completion_tokens + (b.completion_tokens if b else 0)
        reports[name] = suite_report(name, items, records, tokens=tokens, limit=limit)
    return {"model": model, "limit": limit, "suites": reports, "seconds": round(time.perf_counter() - t0, 2)}


def evaluate(engine, suites: list[str] | None = None, limit: int | None = None, *,
             progress: Progress | None = None) -> dict:
    """Evaluate the model an Engine serves on `suites` (all when None), taking the first `limit`
    items of each kind (all when None). Returns {"model", "dtype", "limit", "suites": {name: report},
    "seconds"}; each report is described in scoring.suite_report and docs/evaluation.md."""
    report = evaluate_with(EngineGenerator(engine), engine.model_id, suites, limit, progress=progress)
    loaded = getattr(engine, "loaded", None)
    return {"model": report["model"], "dtype": getattr(loaded, "dtype", None), **report}
