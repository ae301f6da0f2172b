"""The prefix cache: hash-chained KV blocks, LRU eviction within a budget, prefill at an offset that
gives the same logits as a full prefill, and the engine not prefilling a cached prefix again
(counted in prefilled tokens, not timed), with greedy float32 output unchanged."""

import copy
import random

import pytest
import torch

from chatloop.engine import lowbit
from chatloop.engine.prefix_cache import BLOCK, PrefixCache
from chatloop.engine.quant import MANY, KernelPlan, formats_for
from chatloop.engine.runner import ModelRunner
from chatloop.engine.sampling import SamplingParams
from chatloop.engine.scheduler import Engine
from chatloop.models.loading import load_model


def reused(cache: PrefixCache, tokens: list[int], limit: int | None = None) -> list[int]:
    """The tokens whose cached positions `match` returns, read back from the fake data below."""
    parts = cache.match(tokens, len(tokens) if limit is None else limit)
    return [int(t) for part in parts for t in part.flatten()]


def fake_reader(tokens):
    """Cached "keys and values" [layers, 2, kv, n, d] that are the tokens themselves."""
    return lambda start, stop: torch.tensor(tokens[start:stop]).view(1, 1, 1, -1, 1)


def test_match_finds_the_longest_cached_prefix_only():
    cache = PrefixCache(budget_bytes=100, block_bytes=1)
    a = list(range(3 * BLOCK + 5))
    assert cache.store(a, fake_reader(a)) == 4  # 3 whole blocks and the partial one
    assert reused(cache, a) == a
    assert len(cache.match(a, len(a))) == 4
    assert reused(cache, a[: 2 * BLOCK + 3]) == a[: 2 * BLOCK + 3]  # part of a whole block
    assert reused(cache, a, limit=2 * BLOCK + 3) == a[: 2 * BLOCK + 3]  # the limit cuts anywhere
    assert reused(cache, a[:-2] + [999, 1000]) == a[:-2]  # part of the partial block
    changed = a[:BLOCK] + [999] + a[BLOCK + 1:]
    assert reused(cache, changed) == a[:BLOCK]  # nothing after a difference is reused ...
    shifted = [7] + a[1:]
    assert reused(cache, shifted) == []  # ... even where its tokens are the same: keys chain the prefix
    longer = a + [1] * BLOCK
    assert cache.store(longer, fake_reader(longer)) == 2  # only the new: a whole block and a partial one
    assert len(cache) == 5  # the old partial block went: the new whole block starts with its tokens
    assert reused(cache, longer) == longer


def test_a_partial_block_is_kept_only_where_nothing_longer_holds_it():
    cache = PrefixCache(budget_bytes=100, block_bytes=1)
    a = list(range(2 * BLOCK))
    cache.store(a, fake_reader(a))
    assert cache.store(a[: BLOCK + 5], fake_reader(a)) == 0  # the whole block holds those 5 tokens already
    b = a[:BLOCK] + [500 + i for i in range(7)]
    assert cache.store(b, fake_reader(b)) == 1  # another branch after the first block
    assert reused(cache, b + [1, 2]) == b and reused(cache, a) == a
    assert reused(cache, a[:BLOCK] + [500, 501, 3]) == a[:BLOCK] + [500, 501]  # the branch that shares most


def test_lru_eviction_keeps_the_budget_and_shared_roots():
    cache = PrefixCache(budget_bytes=10 * 64, block_bytes=64)
    root = list(range(2 * BLOCK))
    tails = [root + [1000 + i] * (3 * BLOCK) for i in range(6)]
    for tail in tails:
        cache.store(tail, fake_reader(tail))
        assert cache.bytes <= 10 * 64
    assert len(cache) == 10 and cache.evictions == 2 + 6 * 3 - 10
    assert reused(cache, root) == root  # the shared root is still there, its oldest tails are gone
    assert len(cache.match(tails[0], len(tails[0]))) == 2
    assert len(cache.match(tails[-1], len(tails[-1]))) == 5
    long = list(range(5000, 5000 + 40 * BLOCK))
    cache.store(long, fake_reader(long))  # longer than the budget: its head is kept
    assert len(cache) == 10 and len(cache.match(long, len(long))) == 10


# --- the runner: prefill at an offset --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tiny_dir):
    return load_model(str(tiny_dir), "float32").model


def runner(model, budget: int = 64 << 20, slots: int = 4, plan: str = "float32", cache: str = "float16") -> ModelRunner:
    return ModelRunner(model, plan, max_slots=slots, max_len=512, prefix_cache_bytes=budget, kv_cache=cache)


@pytest.fixture(scope="module")
def wide_model(tiny_model):
    """The tiny model with heads of 32 (an int8 cache holds whole blocks of 32), random as it is."""
    config = copy.deepcopy(tiny_model.config)
    config.hidden_size, config.intermediate_size, config.head_dim = 128, 256, 32
    torch.manual_seed(1)
    return type(tiny_model)(config).eval()


# The exact plan (SDPA over a float32 cache), and a fused one where our kernels run: a float16 cache,
# whose prompts continuing a cached prefix, or packed with others, attend through lowbit.attention;
# and an int8 one (heads of 32), which every path reads back the same way.
PLANS = [("float32", "float16", 1e-4), ("float32-onednn", "float16", 1e-3), ("float32-onednn", "int8", 1e-3)]


def needs_plan(plan: str) -> None:
    if plan != "float32" and (plan not in formats_for("float32") or not lowbit.available()):
        pytest.skip(f"{plan} with our attention does not run here")


def model_for(cache: str, tiny_model, wide_model):
    return wide_model if cache == "int8" else tiny_model


def ids(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(100, 40000) for _ in range(n)]


@pytest.mark.parametrize("plan, cache, tol", PLANS)
def test_a_cached_prefix_is_not_prefilled_again_and_logits_match(tiny_model, wide_model, plan, cache, tol):
    needs_plan(plan)
    model = model_for(cache, tiny_model, wide_model)
    cold, warm = runner(model, budget=0, plan=plan, cache=cache), runner(model, plan=plan, cache=cache)
    assert warm.native_attention == (plan != "float32")
    assert warm.cache_dtype == {"float32": torch.float32, "float16": torch.float16, "int8": torch.int8}[
        cache if warm.native_attention else "float32"]
    assert cold.prefix is None
    first = ids(70, 1)
    second = first + ids(30, 2)
    warm.prefill([first])
    warm.remove(0, history=first)
    assert warm.prefilled_tokens == 70 and warm.reused_tokens == 0
    got = warm.prefill([second])
    assert warm.last_reused == [70] and warm.reused_tokens == 70  # 4 whole blocks and 6 tokens of a fifth
    assert warm.prefilled_tokens == 70 + 30  # only what the cache did not hold
    want = cold.prefill([second])
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    # and decoding on top of the reused prefix sees the same history
    torch.testing.assert_close(warm.decode([5]), cold.decode([5]), rtol=tol, atol=tol)


@pytest.mark.parametrize("plan, cache, tol", PLANS[1:])
def test_a_long_fresh_prompt_attends_through_our_kernel_with_the_same_logits(tiny_model, wide_model, plan, cache,
                                                                           tol, monkeypatch):
    """From TILED_FROM tokens a prompt's own attention goes through lowbit.attention (its tokens tiled),
    not SDPA's causal kernel; a shorter one keeps SDPA. The logits are SDPA's within float32's
    rounding, as it is carried through the cache."""
    from chatloop.engine import runner as runner_module

    needs_plan(plan)
    model = model_for(cache, tiny_model, wide_model)
    calls = []
    real = lowbit.attention
    monkeypatch.setattr(lowbit, "attention", lambda *a, **k: calls.append(len(a[3])) or real(*a, **k))
    fused = runner(model, budget=0, plan=plan, cache=cache)
    tiled_from = runner_module.TILED_FROM
    for n in (tiled_from - 1, tiled_from + 44):
        calls.clear()
        prompt = ids(n, 20)
        got = fused.prefill([prompt])
        fused.clear()
        assert calls == ([n] * len(fused.layers) if n >= tiled_from else [])
        monkeypatch.setattr(runner_module, "TILED_FROM", 10**9)  # SDPA whatever the length
        want = fused.prefill([prompt])
        fused.clear()
        monkeypatch.setattr(runner_module, "TILED_FROM", tiled_from)
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_the_cache_is_int8_by_default_where_our_kernels_run_and_its_blocks_hold_its_rows(
        tiny_model, wide_model, monkeypatch):
    """The kv_cache setting (CHATLOOP_KV_CACHE) picks the cache where our attention runs; int8 needs
    heads of whole blocks of 32 (the tiny model's are 16: float16), the exact plan keeps float32. A
    prefix-cache block is the cache's own bytes: an int8 one 9/16 of a float16 one."""
    from chatloop.config import Settings

    needs_plan("float32-onednn")
    monkeypatch.delenv("CHATLOOP_KV_CACHE", raising=False)
    wide = ModelRunner(wide_model, "float32-onednn", max_slots=2, max_len=64, prefix_cache_bytes=1 << 20)
    assert wide.cache_dtype == torch.int8
    assert runner(tiny_model, plan="float32-onednn", cache="int8").cache_dtype == torch.float16
    assert runner(wide_model, plan="float32", cache="int8").cache_dtype == torch.float32
    monkeypatch.setenv("CHATLOOP_KV_CACHE", "float16")
    half = ModelRunner(wide_model, "float32-onednn", max_slots=2, max_len=64, prefix_cache_bytes=1 << 20)
    assert half.cache_dtype == torch.float16
    assert wide.prefix.block_bytes * 16 == half.prefix.block_bytes * 9
    monkeypatch.setenv("CHATLOOP_KV_CACHE", "int4")
    with pytest.raises(ValueError, match="kv_cache"):
        Settings()


def test_a_whole_cached_prompt_still_prefills_its_last_token(tiny_model):
    warm = runner(tiny_model)
    prompt = ids(3 * BLOCK, 3)
    warm.prefill([prompt])
    warm.remove(0, history=prompt)
    warm.prefill([prompt])
    assert warm.last_reused == [3 * BLOCK - 1]  # the last token's logits pick the first answer token


@pytest.mark.parametrize("plan, cache, tol", PLANS)
def test_packed_prefill_mixes_cached_and_new_prompts(tiny_model, wide_model, plan, cache, tol):
    needs_plan(plan)
    model = model_for(cache, tiny_model, wide_model)
    cold, warm = runner(model, budget=0, plan=plan, cache=cache), runner(model, plan=plan, cache=cache)
    shared = ids(40, 4)
    warm.prefill([shared])
    warm.remove(0, history=shared)
    prompts = [shared + ids(9, 5), ids(25, 6), shared + ids(20, 7)]
    got = warm.prefill(prompts)
    assert warm.last_reused == [40, 0, 40]
    want = torch.cat([cold.prefill([p]) for p in prompts])
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    torch.testing.assert_close(warm.decode([1, 2, 3]), cold.decode([1, 2, 3]), rtol=tol, atol=tol)


# A plan as `auto` makes them: 4-bit layers for one row, the same with activations rounded to int8 for
# batches, 8-bit ones for prefills; an 8-bit output projection for one row, a 4-bit rounded one for more.
MIXED = KernelPlan("float32", ((1, "int4-avx2"), (8, "int4-avx2-a8"), (MANY, "int8-avx2")),
                   ((1, "int8-avx2"), (MANY, "int4-avx2-a8")))


@pytest.mark.parametrize("cache", ["float16", "int8"])
@pytest.mark.parametrize("new_tokens", [1, 5, 30])
def test_a_prompt_gives_the_same_logits_however_much_of_it_was_cached_or_packed(tiny_model, wide_model, cache,
                                                                              new_tokens):
    """A prefill takes the plan's prefill formats whatever its number of tokens (one included: it
    ran as a decoding step) and its output projection one row's whatever the number of prompts.
    Before, a continuation of a few tokens took the decoding batches' formats (other weights, rounded
    activations) and 3 packed prompts a rounded output projection: a seeded request answered
    differently once its prompt was cached."""
    needs_plan("int4-avx2-a8")
    model = model_for(cache, tiny_model, wide_model)
    cold, warm = (ModelRunner(model, MIXED, max_slots=4, max_len=512, prefix_cache_bytes=budget, kv_cache=cache)
                  for budget in (0, 64 << 20))
    shared = ids(3 * BLOCK, 11)
    warm.prefill([shared])
    warm.remove(0, history=shared)
    prompts = [shared + ids(new_tokens, 12), ids(40, 13), shared + ids(new_tokens + 3, 14)]
    got = warm.prefill(prompts)
    assert warm.last_reused == [3 * BLOCK, 0, 3 * BLOCK]
    want = torch.cat([cold.prefill([p]) for p in prompts])  # each alone, from scratch
    # (a fresh prompt alone attends through SDPA, the others through our kernel: ~0.002 apart here;
    # the formats of a few tokens' batch, or of 3 rows' output projection, were ~0.9 apart)
    torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)
    warm.clear()
    alone = shared + ids(new_tokens, 15)  # one prompt: a single new token is a prefill of one token
    got = warm.prefill([alone])
    assert warm.last_reused == [3 * BLOCK]
    torch.testing.assert_close(got, cold.prefill([alone]), rtol=1e-2, atol=1e-2)


def test_removing_a_slot_stores_its_answer_and_moves_the_rest(tiny_model):
    warm = runner(tiny_model)
    a, b = ids(20, 8), ids(20, 9)
    warm.prefill([a, b])
    answer = [7 + step for step in range(30)]
    for token in answer:
        warm.decode([token, token + 1])
    assert len(warm.prefix) == 4  # a whole block and a partial one of each prompt, stored at prefill
    warm.remove(0, history=a + answer)  # b moves into slot 0
    assert warm.n == 1 and warm.lens[0] == 50
    # a's history of 50 tokens: 3 whole blocks (1 known) and 2 tokens; its prompt's partial block went
    assert len(warm.prefix) == 6
    assert warm.prefix.match(a + answer, 50)[-1].shape[3] == 2
    warm.remove(0, history=b + [t + 1 for t in answer])
    assert len(warm.prefix) == 8


def test_image_features_are_never_served_from_the_cache(tiny_model):
    cold, warm = runner(tiny_model, budget=0), runner(tiny_model)
    prompt = ids(60, 10)
    positions = torch.arange(20, 30)  # "image tokens": their embeddings are replaced by features
    hidden = tiny_model.config.hidden_size
    first, second = torch.randn(10, hidden), torch.randn(10, hidden)
    warm.prefill([prompt], embeds=[(positions, first)])
    warm.remove(0, history=prompt)
    assert len(warm.prefix) == 2  # only the 20 tokens before the first image token
    got = warm.prefill([prompt], embeds=[(positions, second)])  # same ids, another image
    assert warm.last_reused == [20]
    want = cold.prefill([prompt], embeds=[(positions, second)])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# --- the engine ----------------------------------------------------------------------------------


def greedy(n: int) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)


@pytest.fixture(scope="module")
def engines(tiny_dir):
    pair = [Engine(lambda: load_model(str(tiny_dir), "float32"), max_batch=4, prefix_cache_mb=mb) for mb in (0, 64)]
    yield pair
    for engine in pair:
        engine.shutdown()


def test_a_chat_is_prefilled_once_and_answers_the_same_with_and_without_the_cache(engines):
    cold, warm = engines
    prompt = ids(50, 11)
    before = warm.stats()
    for turn in range(6):
        a, b = cold.generate(prompt, greedy(12)), warm.generate(prompt, greedy(12))
        assert b.token_ids == a.token_ids, f"turn {turn}"
        assert a.cached_tokens == 0
        # this turn's prompt is the last one plus its answer: all of it but the answer's last token
        # (sampled, never fed) came from the cache
        history = len(prompt) - 12 - 9 + 11 if turn else 0
        assert b.cached_tokens == history, f"turn {turn}"
        prompt = prompt + b.token_ids + ids(9, 100 + turn)  # the next user message
    stats = warm.stats()
    prefilled = stats["prefill_tokens"] - before["prefill_tokens"]
    cached = stats["prefix_cached_tokens"] - before["prefix_cached_tokens"]
    total = sum(50 + t * 21 for t in range(6))
    assert prefilled + cached == total
    assert prefilled == 50 + 5 * (9 + 1)  # each later turn prefilled only its new message (and that last token)
    assert stats["prefix_cache_blocks"] > 0 and stats["prefix_cache_bytes"] > 0
    assert cold.stats()["prefix_cached_tokens"] == 0


def test_concurrent_requests_sharing_a_system_prompt_answer_as_alone(engines):
    cold, warm = engines
    system = ids(80, 12)
    prompts = [system + ids(5 + i, 200 + i) for i in range(4)]
    alone = [cold.generate(p, greedy(10)).token_ids for p in prompts]
    warm.generate(system + ids(3, 300), greedy(2))  # someone used the system prompt before
    handles = [warm.submit(p, greedy(10)) for p in prompts]
    results = [h.wait() for h in handles]
    assert [r.token_ids for r in results] == alone
    assert all(r.cached_tokens == 80 for r in results)


# --- the default model's chat template makes earlier turns a token prefix --------------------------


def test_each_turn_of_a_chat_starts_with_the_last_turns_prompt_and_answer(tokenizer):
    """What the cache relies on for a chat: turn N+1's prompt is turn N's prompt followed by the tokens
    of its answer (so the blocks stored when turn N finished are found again), with and without tools
    (the 36 Open WebUI schemas go first, into the system prompt) and through a tool call and its
    result (the call re-rendered as the model writes it in our format)."""
    import json

    from chatloop.bench.prefix import TOOLS
    from chatloop.models.chat_format import render_prompt

    tools = json.loads(TOOLS.read_text())
    call = {"id": "call_1", "type": "function",
            "function": {"name": "search_web", "arguments": json.dumps({"query": "capital of France"})}}
    written = '<tool_call>{"name": "search_web", "arguments": {"query": "capital of France"}}</tool_call>'
    question = [{"role": "user", "content": "What is the capital of France?"}]
    turns = [  # (what the model wrote, the messages of the next turn after it)
        ("The capital of France is Paris.", [{"role": "user", "content": "And Spain?"}]),
        (written, [{"role": "tool", "tool_call_id": "call_1", "content": "Paris is the capital."}]),
    ]
    for shown in (None, tools):
        for answer, then in turns:
            before = render_prompt(tokenizer, question, tools=shown).ids
            said = {"role": "assistant", "content": answer} if answer != written else \
                {"role": "assistant", "content": "", "tool_calls": [call]}
            after = render_prompt(tokenizer, question + [said] + then, tools=shown).ids
            answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
            assert after[: len(before) + len(answer_ids)] == before + answer_ids, (answer, shown is not None)
    shared = [render_prompt(tokenizer, [{"role": "user", "content": q}], tools=tools).ids for q in ("Hi", "Weather?")]
    common = next(i for i, (a, b) in enumerate(zip(*shared)) if a != b)
    assert common > 6000  # Open WebUI's tool schemas: one shared prefix of ~6,300 tokens
