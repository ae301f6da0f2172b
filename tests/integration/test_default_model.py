"""The real default model: float32 equals transformers token for token; faster dtypes keep quality."""

import math

import pytest
import torch

from chatloop.engine.runner import ModelRunner
from chatloop.engine.sampling import SamplingParams
from chatloop.engine.scheduler import Engine
from chatloop.models.chat_format import render_conversation
from chatloop.models.loading import load_model

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What is the capital of France?",
    "Write two short sentences about the ocean and its waves.",
    "List three fruits that are red, and say why people like each of them.",
]
TOKENS = 24

# A conversation written for this test (no third-party text): perplexity is measured over it.
TRANSCRIPT = [
    {"role": "user", "content": "Explain how a bicycle stays upright while moving, in simple terms."},
    {"role": "assistant", "content": (
        "A moving bicycle stays upright mainly because the rider keeps steering it under its centre of mass. "
        "When the bike starts to lean to one side, the rider turns the handlebars slightly in that direction, "
        "which brings the wheels back underneath. The shape of the front fork also helps: because the front wheel "
        "touches the ground behind the steering axis, the wheel tends to turn into a lean by itself. This is why "
        "it is easier to balance when you ride faster and harder when you go very slowly.")},
    {"role": "user", "content": "What is the capital of France, and what is it famous for?"},
    {"role": "assistant", "content": (
        "The capital of France is Paris. It is famous for the Eiffel Tower, the Louvre museum, its cafés, "
        "fashion houses and long history as a centre of art and science.")},
    {"role": "user", "content": "Give me three tips for sleeping better."},
    {"role": "assistant", "content": (
        "1. Go to bed and wake up at the same time every day, even at weekends.\n"
        "2. Keep your bedroom cool, dark and quiet, and leave screens outside it.\n"
        "3. Avoid coffee and large meals in the evening, and get some daylight in the morning.")},
    {"role": "user", "content": "用一句话介绍长城。"},
    {"role": "assistant", "content": "长城是中国古代修建的一系列防御工事，绵延数千公里，是世界上最著名的建筑之一。"},
]


@pytest.fixture(scope="module")
def float32_engine(default_dir):
    engine = Engine(lambda: load_model("default", "float32"), max_batch=8)
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def prompts(float32_engine):
    tok = float32_engine.tokenizer
    return [
        render_conversation(tok, [{"role": "user", "content": q}], add_generation_prompt=True).ids for q in QUESTIONS
    ]


@pytest.fixture(scope="module")
def reference(float32_engine, prompts):
    """transformers generate(do_sample=False), one prompt at a time, no padding; the end-of-turn
    token it appends is not part of our token_ids (it ends the answer instead)."""
    model = float32_engine.loaded.model
    eos = set(float32_engine.loaded.eos_token_ids)
    outs = []
    with torch.inference_mode():
        for ids in prompts:
            out = model.generate(torch.tensor([ids]), max_new_tokens=TOKENS, do_sample=False)[0, len(ids):].tolist()
            outs.append(out[: next((i for i, t in enumerate(out) if t in eos), len(out))])
    assert any(len(o) == TOKENS for o in outs)
    return outs


GREEDY = SamplingParams(max_tokens=TOKENS, temperature=0)


def test_float32_single_stream_equals_transformers_generate(float32_engine, prompts, reference):
    for ids, ref in zip(prompts, reference):
        assert float32_engine.generate(ids, GREEDY).token_ids == ref


def test_float32_batched_different_lengths_equals_transformers_generate(float32_engine, prompts, reference):
    assert len({len(p) for p in prompts}) == len(prompts)
    handles = [float32_engine.submit(ids, GREEDY) for ids in prompts]
    assert [h.wait().token_ids for h in handles] == reference


def perplexity(model, plan, ids: list[int], stepwise: bool = False) -> float:
    """Over `ids`: all positions in one pass (the prefill formats), or token by token through
    one-row decoding steps (the single-stream formats)."""
    runner = ModelRunner(model, plan, max_slots=1, max_len=len(ids))
    if stepwise:
        logits = torch.cat([runner.prefill([ids[:1]])] + [runner.decode([t]) for t in ids[1:-1]])
    else:
        logits = runner.score(ids)[:-1]
    return math.exp(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:])).item())


# int4 halves int8's bytes per weight; the issue's bound for it is 5% (the README reports the figure).
BOUND = {"bfloat16": 1.02, "int8": 1.02, "int4": 1.05, "int8-avx2": 1.02, "int4-avx2": 1.05, "auto": 1.02}


@pytest.mark.parametrize("mode", ["bfloat16", "int8", "int4", "int8-avx2", "int4-avx2", "auto"])
def test_fast_dtypes_stay_within_their_perplexity_bound_of_float32(float32_engine, mode):
    from chatloop.engine import lowbit
    from chatloop.engine.kernels import choose_plan

    if mode.endswith("-avx2") and not lowbit.available():
        pytest.skip(f"our AVX2 kernels are not available here: {lowbit.unavailable_reason()}")
    tok = float32_engine.tokenizer
    ids = render_conversation(tok, TRANSCRIPT).ids
    assert len(ids) > 300
    loaded = float32_engine.loaded
    model = loaded.model
    base = perplexity(model, "float32", ids)
    assert 1.0 < base < 100.0  # the model actually predicts this text
    plan = choose_plan(model, tok, loaded.model_id)[0] if mode == "auto" else mode
    for stepwise in (False, True):
        ppl = perplexity(model, plan, ids, stepwise)
        assert base * 0.9 <= ppl <= base * BOUND[mode], f"{mode} (stepwise={stepwise}): {ppl:.3f} vs {base:.3f}"


def test_auto_answers_the_capital_of_france(default_engine):
    ids = render_conversation(default_engine.tokenizer, [{"role": "user", "content": QUESTIONS[0]}],
                              add_generation_prompt=True).ids
    r = default_engine.generate(ids, SamplingParams(max_tokens=32, temperature=0))
    assert "Paris" in r.text and r.finish_reason == "stop"


def test_streaming_chinese_and_emoji_never_breaks_characters(default_engine):
    ids = render_conversation(default_engine.tokenizer,
                              [{"role": "user", "content": "请用中文介绍一下北京，并加上一些表情符号 🎉"}],
                              add_generation_prompt=True).ids
    # greedy: a sampled answer (any kernel plan rounds a little differently) may stay in English
    handle = default_engine.submit(ids, SamplingParams(max_tokens=80, temperature=0))
    deltas = [e.text for e in handle]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == handle.result.text
    assert any(ord(c) > 0x2E80 for c in handle.result.text)  # it did produce CJK/emoji text
