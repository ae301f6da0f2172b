"""The engine on a tiny random model: limits, stops, seeds, streaming, batching under submit/cancel."""

import random
import threading
import time

import pytest

from chatloop.engine.sampling import SamplingParams
from chatloop.engine.scheduler import Engine
from chatloop.errors import ContextTooLongError, EngineOverloaded
from chatloop.models.loading import load_model

PROMPT = [1, 9690, 198, 4093, 3458, 2, 198, 1, 520, 9531, 198]


def greedy(n: int, **kw) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0, ignore_eos=True, **kw)


def test_max_tokens_finishes_with_length_and_counts_usage(tiny_engine):
    r = tiny_engine.generate(PROMPT, greedy(12))
    assert r.finish_reason == "length"
    assert r.completion_tokens == len(r.token_ids) == 12 and r.prompt_tokens == len(PROMPT)
    assert r.model == "tiny-llama:test" and r.ttft_s is not None and r.latency_s >= r.ttft_s


def test_streamed_deltas_add_up_to_the_final_text(tiny_engine):
    handle = tiny_engine.submit(PROMPT, greedy(20))
    events = list(handle)
    assert events[-1].finished and not any(e.finished for e in events[:-1])
    assert "".join(e.text for e in events) == handle.result.text
    assert [t for e in events for t in e.token_ids] == handle.result.token_ids


def test_greedy_is_deterministic_and_seeds_reproduce(tiny_engine):
    assert tiny_engine.generate(PROMPT, greedy(16)).token_ids == tiny_engine.generate(PROMPT, greedy(16)).token_ids
    sampled = [SamplingParams(max_tokens=16, temperature=1.0, seed=s, ignore_eos=True) for s in (7, 7, 8)]
    a, b, c = (tiny_engine.generate(PROMPT, p).token_ids for p in sampled)
    assert a == b and a != c


def test_stop_string_truncates_before_it(tiny_engine):
    full = tiny_engine.generate(PROMPT, greedy(40)).text
    assert len(full) > 20
    stop = full[10:14]
    cut = full.index(stop)
    r = tiny_engine.generate(PROMPT, greedy(40, stop=(stop,)))
    assert r.finish_reason == "stop" and r.text == full[:cut]


def test_eos_token_ends_with_stop(tiny_dir, tiny_engine):
    """The random model never chooses its real end-of-turn token, so this engine declares the third
    token greedy decoding picks to be one: generation must stop right before it."""
    plain = tiny_engine.generate(PROMPT, greedy(8)).token_ids
    eos = plain[2]
    first = plain.index(eos)

    def loader():
        loaded = load_model(str(tiny_dir), "float32")
        loaded.eos_token_ids = (eos,)
        return loaded

    engine = Engine(loader, max_batch=1)
    try:
        r = engine.generate(PROMPT, SamplingParams(max_tokens=50, temperature=0))
        assert r.finish_reason == "stop" and r.token_ids == plain[:first] and eos not in r.token_ids
        handle = engine.submit(PROMPT, SamplingParams(max_tokens=50, temperature=0, logprobs=1))
        events = list(handle)  # the end-of-turn token is not one of the answer's: no logprobs for it
        assert len(handle.result.logprobs) == len(handle.result.token_ids) == first
        assert sum(len(e.logprobs) for e in events) == first
    finally:
        engine.shutdown()


def test_prompt_longer_than_context_is_refused(tiny_engine):
    with pytest.raises(ContextTooLongError):
        tiny_engine.submit(PROMPT * 100, greedy(4))


def test_generation_stops_at_the_context_limit(tiny_engine):
    prompt = (PROMPT * 50)[: tiny_engine.max_len - 5]
    r = tiny_engine.generate(prompt, SamplingParams(max_tokens=None, temperature=0, ignore_eos=True))
    assert r.finish_reason == "length" and r.completion_tokens == 5


def test_batched_greedy_equals_sequential_greedy(tiny_engine):
    prompts = [PROMPT, PROMPT[:5], PROMPT + PROMPT[:7], PROMPT[3:]]
    alone = [tiny_engine.generate(p, greedy(24)).token_ids for p in prompts]
    handles = [tiny_engine.submit(p, greedy(24)) for p in prompts]
    assert [h.wait().token_ids for h in handles] == alone


def test_sixteen_requests_with_random_cancels_all_finish(tiny_engine):
    rng = random.Random(0)
    handles, expect_cancel = [], []
    for i in range(16):
        n = rng.randint(5, 60)
        params = SamplingParams(max_tokens=n, temperature=rng.choice([0, 0.8]), seed=i, ignore_eos=True)
        handles.append((tiny_engine.submit(PROMPT[: rng.randint(3, len(PROMPT))], params), n))
        expect_cancel.append(rng.random() < 0.4)
    for (h, _), cancel in zip(handles, expect_cancel):
        if cancel:
            time.sleep(rng.random() * 0.05)
            h.cancel()
    done = threading.Event()
    results = []

    def collect():
        results.extend(h.wait() for h, _ in handles)
        done.set()

    threading.Thread(target=collect, daemon=True).start()
    assert done.wait(120), "engine deadlocked"
    for (h, n), cancel, r in zip(handles, expect_cancel, results):
        assert r.finish_reason in (("cancelled", "length") if cancel else ("length",))
        if r.finish_reason == "length":
            assert r.completion_tokens == n
    deadline = time.time() + 5
    while tiny_engine.stats()["active"] and time.time() < deadline:
        time.sleep(0.01)
    stats = tiny_engine.stats()
    assert {k: stats[k] for k in ("active", "waiting", "max_batch")} == {"active": 0, "waiting": 0, "max_batch": 8}


def test_cancel_frees_the_slot_for_the_next_request(tiny_dir):
    engine = Engine(lambda: load_model(str(tiny_dir), "float32"), max_batch=1)
    try:
        long = engine.submit(PROMPT, SamplingParams(max_tokens=None, temperature=0, ignore_eos=True))
        next(iter(long))  # it is running
        waiting = engine.submit(PROMPT, greedy(3))
        long.cancel()
        assert long.wait().finish_reason == "cancelled"
        assert waiting.wait().finish_reason == "length"
    finally:
        engine.shutdown()


def test_full_queue_raises_overloaded(tiny_dir):
    engine = Engine(lambda: load_model(str(tiny_dir), "float32"), max_batch=1, max_waiting=2)
    try:
        running = engine.submit(PROMPT, SamplingParams(max_tokens=None, temperature=0, ignore_eos=True))
        next(iter(running))
        queued = [engine.submit(PROMPT, greedy(2)) for _ in range(2)]
        with pytest.raises(EngineOverloaded, match="overloaded"):
            engine.submit(PROMPT, greedy(2))
        running.cancel()
        assert all(h.wait().finish_reason == "length" for h in queued)
    finally:
        engine.shutdown()


def test_loader_errors_reach_the_caller():
    def broken():
        raise ContextTooLongError("loader exploded")

    with pytest.raises(ContextTooLongError, match="loader exploded"):
        Engine(broken)


def test_json_schema_constraint_yields_valid_json(tiny_engine):
    import json

    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "ok": {"type": "boolean"}},
              "required": ["name", "ok"], "additionalProperties": False}
    grammar = tiny_engine.grammars.json_schema(schema)
    for seed in range(4):
        r = tiny_engine.generate(PROMPT, SamplingParams(max_tokens=200, temperature=1.0, seed=seed, grammar=grammar))
        assert r.finish_reason == "stop", r.text
        data = json.loads(r.text)
        assert set(data) == {"name", "ok"} and isinstance(data["ok"], bool)


def test_invalid_schema_is_a_usage_error(tiny_engine):
    from chatloop.errors import UsageError

    with pytest.raises(UsageError, match="invalid JSON schema"):
        tiny_engine.grammars.json_schema({"type": "no-such-type"})


def test_penalties_apply_beside_plain_requests(tiny_engine):
    plain = tiny_engine.generate(PROMPT, greedy(20)).token_ids
    handles = [tiny_engine.submit(PROMPT, greedy(20, presence_penalty=-2.0, frequency_penalty=-2.0)),
               tiny_engine.submit(PROMPT, greedy(20))]
    rewarded, again = (h.wait() for h in handles)
    assert rewarded.finish_reason == "length" and again.token_ids == plain  # its neighbour is unaffected
    # negative penalties reward what was already said: the answer falls into repeating itself
    assert len(set(plain)) >= 15 and len(set(rewarded.token_ids)) <= len(set(plain)) // 2


def _dead_end_grammar(engine):
    """A grammar that allows `{` and then nothing (its rule after it never produces a string):
    compiled directly, bypassing the schema checks that refuse such formats before the engine."""
    return engine.grammars._compiler.compile_grammar('root ::= "{" tail\ntail ::= tail "x"')


def test_a_sequence_whose_grammar_dead_ends_fails_alone(tiny_engine):
    expected = [tiny_engine.generate(p, greedy(24)).token_ids for p in (PROMPT, PROMPT[:6])]
    bad = tiny_engine.submit(PROMPT, SamplingParams(max_tokens=40, temperature=0, grammar=_dead_end_grammar(tiny_engine)))
    good = [tiny_engine.submit(p, greedy(24)) for p in (PROMPT, PROMPT[:6])]
    failed = bad.wait()
    assert failed.finish_reason == "error" and failed.input_error and "no continuation" in failed.error
    assert [h.wait().token_ids for h in good] == expected
    assert tiny_engine.generate(PROMPT, greedy(24)).token_ids == expected[0]  # still serving


def test_cancelling_a_waiting_request_frees_its_queue_place(tiny_dir):
    engine = Engine(lambda: load_model(str(tiny_dir), "float32"), max_batch=1)
    try:
        running = engine.submit(PROMPT, SamplingParams(max_tokens=None, temperature=0, ignore_eos=True))
        next(iter(running))
        waiting = engine.submit(PROMPT, greedy(3))
        assert engine.stats()["waiting"] == 1
        waiting.cancel()
        assert waiting.wait().finish_reason == "cancelled"
        assert engine.stats()["waiting"] == 0 and running.result is None  # the running one carries on
        running.cancel()
        assert running.wait().finish_reason == "cancelled"
    finally:
        engine.shutdown()


def test_generation_time_budget_ends_with_length(tiny_engine):
    r = tiny_engine.generate(PROMPT, SamplingParams(max_tokens=None, temperature=0, ignore_eos=True, max_time_s=0.05))
    assert r.finish_reason == "length" and 0 < r.completion_tokens < tiny_engine.max_len - len(PROMPT)
    assert r.latency_s < 5


def _model_logprobs(tiny_dir, ids: list[int], start: int):
    """log-softmax of the float32 model's logits for positions start.. of `ids` (transformers, no cache)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits[start - 1:-1], dim=-1)


def test_logprobs_are_the_models_own_and_ride_with_their_tokens(tiny_dir, tiny_engine):
    """Each output token gets its log probability and its top alternatives, most likely first: the
    float32 model's own numbers (transformers' forward pass as reference), greedy's token the top
    one, before the penalties that changed which token was picked; a streamed token's event carries
    its entry."""
    handle = tiny_engine.submit(PROMPT, greedy(10, logprobs=3))
    events = list(handle)
    r = handle.result
    assert [e["logprob"] for ev in events for e in ev.logprobs] == [e["logprob"] for e in r.logprobs]
    assert len(r.logprobs) == len(r.token_ids) == 10
    reference = _model_logprobs(tiny_dir, PROMPT + r.token_ids, len(PROMPT))
    for i, (token, entry) in enumerate(zip(r.token_ids, r.logprobs)):
        assert abs(entry["logprob"] - reference[i, token].item()) < 1e-3
        assert [t["logprob"] for t in entry["top_logprobs"]] == sorted((t["logprob"] for t in entry["top_logprobs"]),
                                                                      reverse=True)
        assert len(entry["top_logprobs"]) == 3 and entry["top_logprobs"][0]["bytes"] == entry["bytes"]
    penalised = tiny_engine.generate(PROMPT, greedy(10, logprobs=0, presence_penalty=2.0, frequency_penalty=2.0))
    reference = _model_logprobs(tiny_dir, PROMPT + penalised.token_ids, len(PROMPT))
    assert all(e["top_logprobs"] == [] for e in penalised.logprobs)
    assert max(abs(e["logprob"] - reference[i, t].item())
               for i, (t, e) in enumerate(zip(penalised.token_ids, penalised.logprobs))) < 1e-3
    assert tiny_engine.generate(PROMPT, greedy(4)).logprobs is None  # not asked for


def test_logit_bias_bans_and_forces_tokens_for_its_request_only(tiny_engine):
    from chatloop.errors import UsageError

    plain = tiny_engine.generate(PROMPT, greedy(8)).token_ids
    banned = tiny_engine.submit(PROMPT, greedy(8, logit_bias=((plain[0], -100.0),)))
    forced = tiny_engine.submit(PROMPT, greedy(8, logit_bias=((77, 100.0),)))
    beside = tiny_engine.submit(PROMPT, greedy(8))
    assert banned.wait().token_ids[0] != plain[0]
    assert forced.wait().token_ids == [77] * 8
    assert beside.wait().token_ids == plain
    with pytest.raises(UsageError, match="logit_bias"):
        tiny_engine.submit(PROMPT, greedy(8, logit_bias=((tiny_engine.vocab_size, 1.0),)))
    with pytest.raises(UsageError, match="logit_bias"):
        greedy(8, logit_bias=((5, 101.0),))
    with pytest.raises(UsageError, match="top_logprobs"):
        greedy(8, logprobs=21)


def test_a_failed_prefill_fails_its_requests_and_the_engine_goes_on(tiny_dir):
    """A prefill that raises (out of memory, a kernel's error) ends the requests it was admitting
    with the error, as a failed decoding step ends the running ones; none is left waiting forever."""
    engine = Engine(lambda: load_model(str(tiny_dir), "float32"), max_batch=8)
    try:
        running = engine.submit(PROMPT, greedy(400))
        while not running.result and not engine.stats().get("active"):
            time.sleep(0.01)
        real = engine.runner.prefill

        def broken(*args, **kwargs):
            raise RuntimeError("out of memory")

        engine.runner.prefill = broken
        admitted = [engine.submit(PROMPT[:6 + i], greedy(4)) for i in range(3)]
        finished = threading.Thread(target=lambda: [h.wait() for h in [*admitted, running]], daemon=True)
        finished.start()
        finished.join(60)
        assert not finished.is_alive(), "a request was left waiting"
        assert all(h.result.finish_reason == "error" and "out of memory" in h.result.error for h in admitted)
        engine.runner.prefill = real
        assert engine.generate(PROMPT, greedy(4)).finish_reason == "length"
    finally:
        engine.shutdown()
