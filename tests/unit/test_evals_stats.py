"""Bootstrap intervals: deterministic with the seed, containing the estimate, paired differences."""

import numpy as np
import pytest

from chatloop.evals.stats import aggregate, bootstrap, excludes_zero, paired_bootstrap, win_rate

RNG = np.random.default_rng(123)
SCORES = {"a": RNG.integers(0, 2, 40).tolist(), "b": RNG.integers(0, 2, 25).tolist()}


def test_aggregates():
    groups = {"x": [1, 1, 1, 1], "y": [0, 0]}
    assert aggregate(groups, "micro") == pytest.approx(4 / 6)
    assert aggregate(groups, "macro") == pytest.approx(0.5)
    assert aggregate({}, "micro") is None and aggregate({"x": []}, "macro") is None


@pytest.mark.parametrize("how", ["micro", "macro"])
def test_bootstrap_is_deterministic_and_contains_the_estimate(how):
    est, ci = bootstrap(SCORES, how)
    assert (est, ci) == bootstrap(SCORES, how)
    assert ci[0] <= est <= ci[1]
    assert 0 <= ci[0] < ci[1] <= 1
    assert bootstrap(SCORES, how, seed=1)[1] != ci  # the seed is what makes it reproducible


def test_bootstrap_interval_shrinks_with_more_items():
    small = bootstrap({"k": [1, 0] * 10})[1]
    large = bootstrap({"k": [1, 0] * 500})[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 3


def test_degenerate_and_empty_groups():
    assert bootstrap({"k": [1, 1, 1]}) == (1.0, [1.0, 1.0])
    assert bootstrap({}) == (None, None)
    assert bootstrap({"k": [1, 0], "empty": []}, "macro")[0] == 0.5


def test_paired_identical_reports_differ_by_zero():
    diff, ci = paired_bootstrap(SCORES, SCORES, "macro")
    assert diff == 0 and ci == [0.0, 0.0]
    assert not excludes_zero(ci)


def test_paired_difference_matches_the_aggregates_and_detects_a_real_drop():
    better = {"k": [1] * 45 + [0] * 5}
    worse = {"k": [1] * 25 + [0] * 25}
    diff, ci = paired_bootstrap(better, worse)
    assert diff == pytest.approx(aggregate(better) - aggregate(worse))
    assert ci[0] <= diff <= ci[1] and excludes_zero(ci)
    assert paired_bootstrap(better, worse) == (diff, ci)


def test_a_small_paired_difference_is_not_significant():
    a = {"k": [1, 0] * 15}
    b = {"k": [1, 0] * 14 + [1, 1]}  # one item differs
    diff, ci = paired_bootstrap(a, b)
    assert diff == pytest.approx(-1 / 30) and not excludes_zero(ci)


def test_paired_bootstrap_requires_paired_items():
    with pytest.raises(ValueError, match="pair the items"):
        paired_bootstrap({"k": [1, 0]}, {"k": [1]})


def test_win_rate_counts_ties_half_and_respects_direction():
    est, ci = win_rate([1, 1, 0, 0], [0, 1, 0, 1])
    assert est == 0.5 and ci[0] <= est <= ci[1]
    assert win_rate([1, 1, 1], [0, 0, 0])[0] == 1.0
    assert win_rate([1, 1, 1], [0, 0, 0], higher_is_better=False)[0] == 0.0
    assert win_rate([0.2, 0.2], [0.2, 0.2])[0] == 0.5
    assert win_rate([], []) == (None, None)
