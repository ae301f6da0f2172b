"""Sampling: greedy, temperature, top-k/top-p, penalties, seeds, parameter validation."""

import math

import pytest
import torch

from chatloop.engine.sampling import CANDIDATES, SamplingParams, SequenceSampler, sample_next
from chatloop.errors import UsageError

VOCAB = 50


def sampler(prompt=(), **kw) -> SequenceSampler:
    return SequenceSampler(SamplingParams(**kw), VOCAB, list(prompt))


def draws(logits: torch.Tensor, s: SequenceSampler, n: int) -> list[int]:
    return [sample_next(logits.clone().unsqueeze(0), [s])[0] for _ in range(n)]


def test_greedy_picks_argmax_per_row():
    logits = torch.randn(3, VOCAB)
    out = sample_next(logits.clone(), [sampler(temperature=0) for _ in range(3)])
    assert out == logits.argmax(-1).tolist()


def test_temperature_sampling_follows_softmax():
    logits = torch.full((VOCAB,), -30.0)
    logits[:3] = torch.tensor([2.0, 1.0, 0.0])
    s = sampler(temperature=1.0, seed=1)
    counts = torch.bincount(torch.tensor(draws(logits, s, 3000)), minlength=VOCAB).float() / 3000
    expected = torch.softmax(logits, -1)
    assert torch.allclose(counts[:3], expected[:3], atol=0.03)
    assert counts[3:].sum() == 0


def test_low_temperature_sharpens():
    logits = torch.zeros(VOCAB)
    logits[7] = 1.0
    hot = draws(logits, sampler(temperature=2.0, seed=0), 400).count(7)
    cold = draws(logits, sampler(temperature=0.1, seed=0), 400).count(7)
    assert cold > 390 and hot < 100


def test_top_k_limits_candidates():
    logits = torch.linspace(0, 1, VOCAB)
    picked = set(draws(logits, sampler(temperature=1.0, top_k=2, seed=3), 300))
    assert picked <= {VOCAB - 1, VOCAB - 2} and len(picked) == 2


def test_top_p_keeps_smallest_nucleus():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05] + [0.0] * (VOCAB - 4))
    logits = torch.log(probs.clamp(min=1e-12))
    picked = set(draws(logits, sampler(temperature=1.0, top_p=0.7, seed=5), 400))
    assert picked == {0, 1}


def test_top_p_wider_than_candidates_falls_back_to_full_sort():
    vocab = CANDIDATES * 4
    s = SequenceSampler(SamplingParams(temperature=1.0, top_p=0.9, seed=0), vocab, [])
    out = [sample_next(torch.zeros(1, vocab), [s])[0] for _ in range(300)]
    assert max(out) > CANDIDATES  # a flat distribution's nucleus spans far beyond the candidates


def test_repetition_penalty_discourages_prompt_tokens():
    logits = torch.zeros(VOCAB)
    logits[4], logits[9] = 3.0, 2.0
    s = sampler(prompt=[4], temperature=0, repetition_penalty=2.0)
    assert sample_next(logits.clone().unsqueeze(0), [s]) == [9]  # 3/2 < 2


def test_frequency_and_presence_penalties_grow_with_use():
    logits = torch.zeros(VOCAB)
    logits[1], logits[2] = 1.0, 0.7
    s = sampler(temperature=0, frequency_penalty=0.2)
    seq = []
    for _ in range(4):
        tok = sample_next(logits.clone().unsqueeze(0), [s])[0]
        s.observe(tok)
        seq.append(tok)
    assert seq == [1, 1, 2, 1]  # 1.0 -> 0.8 -> 0.6 < 0.7 -> pick 2, then 0.6 vs 0.5
    p = sampler(temperature=0, presence_penalty=0.5)
    p.observe(1)
    assert sample_next(logits.clone().unsqueeze(0), [p]) == [2]


def test_same_seed_same_draws_different_seed_differs():
    logits = torch.randn(VOCAB)
    a = draws(logits, sampler(temperature=1.0, seed=42), 50)
    b = draws(logits, sampler(temperature=1.0, seed=42), 50)
    c = draws(logits, sampler(temperature=1.0, seed=43), 50)
    assert a == b and a != c


def test_rows_keep_their_own_settings_in_one_batch():
    logits = torch.randn(2, VOCAB)
    greedy, hot = sampler(temperature=0), sampler(temperature=1.5, seed=1)
    outs = [sample_next(logits.clone(), [greedy, hot]) for _ in range(50)]
    assert all(o[0] == int(logits[0].argmax()) for o in outs)
    assert len({o[1] for o in outs}) > 5


@pytest.mark.parametrize(
    "kw",
    [
        {"temperature": -0.1}, {"temperature": 2.5}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -1},
        {"max_tokens": 0}, {"repetition_penalty": 0.0}, {"frequency_penalty": 3.0},
        {"presence_penalty": -2.5}, {"seed": -1}, {"stop": ("",)}, {"stop": ("a", "b", "c", "d", "e")},
        {"stop": "END"}, {"max_time_s": 0.0},
    ],
)
def test_invalid_parameters_are_usage_errors(kw):
    with pytest.raises(UsageError, match="invalid"):
        SamplingParams(**kw)


def test_stop_strings_come_as_a_tuple():
    assert SamplingParams(stop=("END",)).stop == ("END",)
    assert not math.isnan(SamplingParams().temperature)


def test_a_row_that_fails_gets_its_exception_and_the_others_their_tokens():
    class Broken:
        def mask(self, row):
            raise RuntimeError("boom")

    logits = torch.randn(3, VOCAB)
    samplers = [sampler(temperature=0), sampler(temperature=1.0, seed=1), sampler(temperature=0)]
    samplers[1].constraint = Broken()
    out = sample_next(logits.clone(), samplers)
    assert isinstance(out[1], RuntimeError)
    assert [out[0], out[2]] == [int(logits[0].argmax()), int(logits[2].argmax())]


def test_penalties_edit_inference_tensors():
    """The runner's logits are created under inference mode; penalties must still apply."""
    with torch.inference_mode():
        logits = torch.zeros(1, VOCAB)
        logits[0, 3] = 1.0
    s = sampler(temperature=0, presence_penalty=2.0, frequency_penalty=1.0)
    s.observe(3)
    assert sample_next(logits, [s]) != [3]
