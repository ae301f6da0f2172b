"""`--dtype auto`: the weight formats chosen by measurement, on this machine, for this model.

    plan, report = choose_plan(model, tokenizer, "smollm2-135m-instruct:1")
    python -m chatloop.engine.kernels [REF]        # measure now (the cache is ignored) and print

Which format is fastest depends on the CPU more than on anything else: packed bf16 wins batches by 3x
where the CPU multiplies bf16 natively (AVX-512 BF16, AMX) and loses to float32 where it emulates it
(AVX2); int4 and int8 win single-stream decoding, which is bound by the bytes of weights read per
token, and lose batches, whose weights they unpack again for every row. So on first load of a model
on a machine, every format that can run (quant.py) is timed on the model's own layers for 1 row,
the batch sizes the engine serves and a prefill, for both activation dtypes, and its perplexity on
a calibration text is compared with float32's. Per case the fastest format within the accuracy
budget (CHATLOOP_KERNEL_PPL_BUDGET, relative) wins; of the two activation dtypes, the one with the
lower mean per-token cost over the cases. The choice and its measurements are cached in
CHATLOOP_HOME/kernels/, keyed by the machine's fingerprint (CPU, flags, kernel caps, torch, threads;
hardware.py) and the model's architecture and shapes, and logged; a change to our kernels' source
(lowbit.c) measures again.
"""

import hashlib
import json
import logging
import math
import os
import statistics
import time

import torch

from chatloop.config import get_settings
from chatloop.engine import lowbit
from chatloop.engine.quant import DENSE, MANY, PREFILL_ROWS, ROUNDED_ACTIVATIONS, KernelPlan, formats_for
from chatloop.fsutil import atomic_write_text
from chatloop.hardware import fingerprint, fingerprint_key

log = logging.getLogger(__name__)

PREFILLS = (32, 128)  # tokens of the measured prefills: a short chat message, and longer prompts or
# several packed ones (their best formats differ: on an AVX2-only Zen 3, 8-bit weights beat oneDNN's
# float32 by 20% at 41 tokens and tied with it at 128). Every prefill takes one format whatever its
# length (quant.PREFILL_ROWS): the one with the least time a token over both, as a chat's turns are
# short and its first prompt, a tool-calling client's schemas or a pasted document long (on a Zen 4,
# 4-bit weights took 5-7% less time at 32 tokens, 8-bit ones 3-9% less at 128 and 15% at 330)
SHORT_UP_TO = 64  # decoding batches of up to this many rows take the prefills' format, more rows the
# long prefill's
ROWS = (1, 2, 4, 8)  # decoding batch sizes measured; more rows than the last take the prefills' formats
assert ROWS[-1] < PREFILL_ROWS  # a prefill of any length takes the prefills' formats
SLOWER_BY = 1.5  # a quantised format this much slower than dense for one row is measured no further
WARM_S, WARM_CALLS = 0.02, 3  # untimed calls before each case is timed: this long, at most this many
ROUNDS = 3  # the contenders' layers are timed in this many rounds, one format after another each round
CONTENDS = 1.5  # a format within this factor of a case's fastest after the first round contends
STEP_REPS = 10  # a decoding step (a few ms) is timed at least this many times a round: timed 3 times,
# a neighbour's bursts on a 2-core Zen 5 put 8-bit layers ahead of 4-bit ones at 8 rows (4.32 against
# 4.50 ms), which alternated 100 times each took 4.0 and 3.5 ms
VERSION = 9  # bump when the measurement changes: old cache entries are then measured again (as they are
# when our kernels' source changes: their speeds are what was measured)

# Calibration text, written for this project: everyday English and Chinese, as chats look.
CALIBRATION = [
    {"role": "user", "content": "Can you explain how rain forms, in a few sentences?"},
    {"role": "assistant", "content": (
        "Rain forms when warm air rises and cools. Cooler air holds less water vapour, so the vapour condenses "
        "into tiny droplets around specks of dust, which is what a cloud is. The droplets bump into each other "
        "and merge; once they are too heavy for the rising air to hold up, they fall as rain.")},
    {"role": "user", "content": "Give me a simple plan for learning to cook at home."},
    {"role": "assistant", "content": (
        "Start with three dishes you like and cook each one twice a week until it feels easy. Learn to use a knife "
        "safely, to season with salt and acid, and to control the heat of the pan. Then add one new recipe a week, "
        "and keep notes on what worked.")},
    {"role": "user", "content": "请用两句话介绍一下你自己。"},
    {"role": "assistant", "content": "我是一个聊天助手，可以回答问题、写作和翻译。我会尽量给出准确、简洁的回答。"},
]


def _best_time(fn, reps: int) -> float:
    """The fastest of `reps` timed calls, after WARM_S seconds of untimed ones (at most WARM_CALLS: each
    decoding step lengthens the history). On a small VM the first calls after a pause (packing a
    format is single-threaded) wait for idle CPUs to wake, and another process may take a core
    mid-call: the fastest time is the format's own, a median of three was not (it once timed an 8-bit
    output projection 7x slower than it is, and the choice went to float32)."""
    start = time.perf_counter()
    fn()
    for _ in range(WARM_CALLS - 1):
        if time.perf_counter() - start >= WARM_S:
            break
        fn()
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _perplexity(runner, ids: list[int]) -> float:
    runner.clear()
    logits = runner.score(ids)
    return math.exp(torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:])).item())


def _decode_times(runner, rows_list: list[int], reps: int) -> dict[int, float]:
    """Seconds per decode step with `rows` sequences of a 32-token history."""
    out = {}
    for rows in rows_list:
        runner.clear()
        runner.prefill([list(range(100, 132))] * rows)
        tokens = [7] * rows
        out[rows] = _best_time(lambda: runner.decode(tokens), max(reps, STEP_REPS))
    runner.clear()
    return out


def _one_row_step(runner) -> float:
    """Seconds of one single-row decode step after a short prompt (a quick first look at a format)."""
    runner.clear()
    runner.prefill([list(range(100, 108))])
    seconds = _best_time(lambda: runner.decode([7]), 2)
    runner.clear()
    return seconds


def _time_layers(runner, rows_list: list[int], ids: list[int], reps: int) -> tuple[dict, dict]:
    """A format's decode steps (seconds, by rows) and prefills (by tokens), JSON-ready."""
    steps = _decode_times(runner, rows_list, reps)
    prefill = {str(n): _best_time(lambda n=n: (runner.clear(), runner.prefill([ids[:n]])), reps) for n in PREFILLS}
    return {str(r): s for r, s in steps.items()}, prefill


def _keep_bytes() -> int:
    """How many bytes of packed weights the contending formats' runners may hold at once between rounds
    (an eighth of the machine's memory)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def _retime(body: dict, kept: dict, rows_list: list[int], ids: list[int], reps: int, rivals=()) -> None:
    """Rounds 2..ROUNDS: the formats within CONTENDS of some case's fastest (theirs, or the other
    activation dtype's in `rivals`: bf16 ones far behind float32's are not timed again) are timed
    again, one after another, and each case keeps its fastest time. On a small VM a neighbour took a
    core for seconds at a time: one round, timed format after format, once timed 4-bit layers with int8
    activations at 14.4 ms a step of 8 rows and 8-bit ones at 12.7 (alternated, they take 9.6 and
    14.1), and 8 streams ran 15% slower on that choice. Noise only slows a call, so the fastest of
    rounds taken in turn is each format's own time."""
    def contenders() -> list[str]:
        cases = [("step_s", str(r)) for r in rows_list] + [("prefill_s", str(n)) for n in PREFILLS]
        out = set()
        for kind, case in cases:
            best = min([body[f][kind][case] for f in kept]
                       + [v[kind][case] for other in rivals for v in other.values() if kind in v])
            out |= {f for f in kept if body[f][kind][case] <= CONTENDS * best}
        return [f for f in kept if f in out]

    for _ in range(ROUNDS - 1 if kept else 0):
        for fmt in contenders():
            steps, prefill = _time_layers(kept[fmt], rows_list, ids, reps)
            for kind, times in (("step_s", steps), ("prefill_s", prefill)):
                body[fmt][kind] = {k: min(v, times[k]) for k, v in body[fmt][kind].items()}


def measure(model, calibration_ids: list[int], rows_list=ROWS, reps: int = 3) -> dict:
    """Time and score every runnable format; returns the raw measurements (JSON-ready).

    A quantised format is first timed for one decoding row, where it has its best case (the fewest
    bytes of weights per token); if it is over SLOWER_BY times the dense format's time there, it
    cannot win anywhere and is measured no further. Without that look the whole measurement took
    minutes on CPUs where a format has no fast kernel (int4 with float32 activations: ~0.4 s a step).

    The layers' formats are timed with one fast output projection (our 8-bit one where it runs): with
    a dense one it was most of each step (Qwen 0.5B: 544 MB of float32 a token), and its noise, not
    the layers, picked the format. Their perplexity is scored with the dense output projection."""
    from chatloop.engine.runner import ModelRunner

    max_batch = max(rows_list)
    hidden = model.lm_head.weight.shape[1]
    results: dict = {"rows": rows_list, "acts": {}}
    dense_step = math.inf  # the fastest dense single-row step so far (each dtype's dense formats come first)
    for act in ("float32", "bfloat16"):
        dtype = torch.float32 if act == "float32" else torch.bfloat16
        dense = DENSE[act][0]
        timing_head = dense
        if "int8-avx2" in formats_for(act) and model.lm_head.weight.shape[0] % lowbit.BLOCK == 0:
            timing_head = "int8-avx2"
        body, head = {}, {}
        kept, room = {}, _keep_bytes()  # format -> its runner (with the output projection it is timed with)
        for fmt in formats_for(act):
            try:
                plan = KernelPlan.uniform(fmt, act, head=timing_head)
                runner = ModelRunner(model, plan, max_slots=max_batch,
                                     max_len=max(len(calibration_ids), *PREFILLS) + 64)
            except (RuntimeError, ValueError) as e:  # a format this model's shapes or this CPU cannot run
                body[fmt] = {"error": f"{type(e).__name__}: {e}"}
                continue
            first = _one_row_step(runner)
            if fmt in DENSE[act]:
                dense_step = min(dense_step, first)
            elif first > SLOWER_BY * dense_step:
                body[fmt] = {"skipped": f"one row takes {first * 1000:.1f} ms a step, over {SLOWER_BY}x the "
                                        f"dense format's {dense_step * 1000:.1f} ms"}
                del runner
                continue
            steps, prefill = _time_layers(runner, rows_list, calibration_ids, reps)
            timing = runner.lm_head
            if timing_head != dense:
                runner.lm_head = runner.make_head(model, ((MANY, dense),))
            body[fmt] = {"step_s": steps, "prefill_s": prefill, "ppl": _perplexity(runner, calibration_ids)}
            if fmt == dense:  # the output projection's formats, on this runner's dense layers
                for hfmt in formats_for(act):
                    try:
                        runner.lm_head = runner.make_head(model, ((MANY, hfmt),))
                    except (RuntimeError, ValueError) as e:
                        head[hfmt] = {"error": f"{type(e).__name__}: {e}"}
                        continue
                    times = {}
                    for r in rows_list:
                        x = torch.randn(r, hidden, dtype=dtype)
                        times[str(r)] = _best_time(lambda x=x: runner.lm_head(x), reps)
                        # (never skipped: the dense one, and the one the layers were timed with)
                        if hfmt not in (dense, timing_head) and times["1"] > SLOWER_BY * head[dense]["step_s"]["1"]:
                            break
                    if len(times) < len(rows_list):
                        head[hfmt] = {"skipped": f"one row takes {times['1'] * 1000:.2f} ms, over {SLOWER_BY}x "
                                                 f"the dense format's {head[dense]['step_s']['1'] * 1000:.2f} ms"}
                        continue
                    head[hfmt] = {"step_s": times, "ppl": _perplexity(runner, calibration_ids)}
            runner.lm_head = timing
            size = runner.weight_bytes(1)
            if size <= room:  # (else this format has its one round)
                kept[fmt], room = runner, room - size
            del runner
        _retime(body, kept, rows_list, calibration_ids, reps, [m["body"] for m in results["acts"].values()])
        kept.clear()
        results["acts"][act] = {"body": body, "head": head, "timing_head": timing_head}
    results["float32_ppl"] = results["acts"]["float32"]["body"]["float32"]["ppl"]
    return results


def _table(best: list[tuple[int, str]]) -> tuple[tuple[int, str], ...]:
    """Merge neighbouring cases with the same format; the last covers any number of rows."""
    merged: list[list] = []
    for rows, fmt in best:
        if merged and merged[-1][1] == fmt:
            merged[-1][0] = rows
        else:
            merged.append([rows, fmt])
    merged[-1][0] = MANY
    return tuple((r, f) for r, f in merged)


def decide(results: dict, budget: float) -> tuple[KernelPlan, dict]:
    """The plan the measurements call for, and a summary of why (per activation dtype: its cost)."""
    limit = results["float32_ppl"] * (1 + budget)
    rows_list = results["rows"]
    options = {}
    for act, m in results["acts"].items():
        body = {f: v for f, v in m["body"].items() if "ppl" in v and v["ppl"] <= limit}
        head = {f: v for f, v in m["head"].items() if "ppl" in v and v["ppl"] <= limit}
        if not body or not head:
            continue
        pick_body = [(r, min((f for f in body if r > 1 or f not in ROUNDED_ACTIVATIONS),
                             key=lambda f: body[f]["step_s"][str(r)])) for r in rows_list]
        # the prefill gives every answer its first token: it keeps the int16 activations one row has (int8
        # ones in a prefill once turned the default model's "The capital of France is Paris." into
        # "L'Étoile, ...": a near tie; batches of decoding rows may round them)
        exact = [f for f in body if f not in ROUNDED_ACTIVATIONS]
        prefill = [(SHORT_UP_TO, min(exact, key=lambda f: sum(body[f]["prefill_s"][str(n)] / n for n in PREFILLS))),
                   (MANY, min(exact, key=lambda f: body[f]["prefill_s"][str(PREFILLS[-1])]))]
        pick_head = [(r, min((f for f in head if r > 1 or f not in ROUNDED_ACTIVATIONS),
                             key=lambda f: head[f]["step_s"][str(r)])) for r in rows_list]
        dense = DENSE[act][0]

        timed_with = m["head"][m.get("timing_head", dense)]["step_s"]

        def step(r, b, h):  # a decode step: the layers' time with that format, the head's swapped in
            return body[b]["step_s"][str(r)] - timed_with[str(r)] + head[h]["step_s"][str(r)]

        per_token = [step(r, b, h) / r for (r, b), (_, h) in zip(pick_body, pick_head)]
        options[act] = {
            "plan": KernelPlan(act, _table(pick_body + prefill), _table(pick_head)),
            "cost_per_token_ms": statistics.mean(per_token) * 1000,
            "tok_s": {str(r): r / step(r, b, h) for (r, b), (_, h) in zip(pick_body, pick_head)},
        }
    if not options:  # nothing within budget: the exact format
        return KernelPlan.uniform("float32"), {"reason": "no format within the accuracy budget"}
    act = min(options, key=lambda a: options[a]["cost_per_token_ms"])
    summary = {a: {"cost_per_token_ms": round(o["cost_per_token_ms"], 3), "plan": o["plan"].describe(),
                   "expected_tok_s": {r: round(v, 1) for r, v in o["tok_s"].items()}} for a, o in options.items()}
    return options[act]["plan"], {"chosen": act, "options": summary}


def _check_combined(model, plan: KernelPlan, ids: list[int], limit: float) -> KernelPlan:
    """Each format was scored alone; a quantised output projection on quantised layers may add up past
    the budget. Score the single-stream pair together; if it is over, keep the output projection dense."""
    from chatloop.engine.runner import ModelRunner

    body, head = plan.body[0][1], plan.head[0][1]
    dense = DENSE[plan.act][0]
    if head in DENSE[plan.act] or body in DENSE[plan.act]:
        return plan
    runner = ModelRunner(model, KernelPlan.uniform(body, plan.act, head=head), max_slots=1, max_len=len(ids) + 8)
    ppl = _perplexity(runner, ids)
    if ppl <= limit:
        return plan
    log.info("%s layers with a %s output projection: perplexity %.3f over the budget; output stays %s",
             body, head, ppl, dense)
    return KernelPlan(plan.act, plan.body, ((MANY, dense),))


def _shape_key(model) -> str:
    """What the measured speeds depend on besides the machine: the architecture and its shapes.
    Versions that share them share one measurement (the bundled model under its GGUF name and as
    registry version 1; every fine-tuned child of a model): the speeds are the same, and a release
    candidate should not wait a minute for them. The accuracy check is the first version's."""
    cfg = model.config.get_text_config()
    shape = [getattr(cfg, f, None) for f in ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads", "head_dim",
                                              "vocab_size", "tie_word_embeddings")]
    return f"{cfg.model_type}-" + hashlib.sha256(json.dumps(shape, default=str).encode()).hexdigest()[:16]


def choose_plan(model, tokenizer, model_id: str) -> tuple[KernelPlan, dict]:
    """The cached plan for this machine and this architecture (shapes), or a new measurement (then
    cached)."""
    from chatloop.models.chat_format import render_conversation

    settings = get_settings()
    path = settings.kernels_dir / fingerprint_key() / f"{_shape_key(model)}.json"
    budget = settings.kernel_ppl_budget
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if (cached.get("version") == VERSION and cached.get("budget") == budget
                    and cached.get("kernels") == lowbit.source_key()):
                return KernelPlan.from_json(cached["plan"]), {**cached["summary"], "cached": str(path)}
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring the unreadable kernel choice %s: %s", path, e)
    t = time.perf_counter()
    log.info("measuring weight formats for %s on this machine (once; cached in %s)", model_id, path.parent)
    ids = render_conversation(tokenizer, CALIBRATION).ids
    results = measure(model, ids)
    plan, summary = decide(results, budget)
    plan = _check_combined(model, plan, ids, results["float32_ppl"] * (1 + budget))
    summary["measured_s"] = round(time.perf_counter() - t, 1)
    summary["float32_ppl"] = round(results["float32_ppl"], 4)
    record = {"version": VERSION, "budget": budget, "kernels": lowbit.source_key(), "model": model_id,
              "machine": fingerprint(),
              "plan": plan.to_json(), "summary": summary, "measurements": results}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1))
    return plan, summary


def _main() -> int:
    import sys

    from chatloop.models.chat_format import render_conversation
    from chatloop.models.loading import load_model

    loaded = load_model(sys.argv[1] if len(sys.argv) > 1 else "default", "float32")
    results = measure(loaded.model, render_conversation(loaded.tokenizer, CALIBRATION).ids)
    plan, summary = decide(results, get_settings().kernel_ppl_budget)
    print(json.dumps({"plan": plan.describe(), "summary": summary, "measurements": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
