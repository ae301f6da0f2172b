"""Bootstrap intervals for evaluation scores (numpy only, fixed seed, so reports are reproducible).

    from chatloop.evals.stats import bootstrap
    est, (lo, hi) = bootstrap({"flip": [1, 0, 0], "flattery": [0, 1]}, how="macro")

Scores come grouped by item kind. "micro" averages over all items, "macro" averages the kinds'
means (each kind weighs the same). Resampling is stratified: each kind's items are redrawn with
replacement within the kind, so every replicate has the same number of items per kind as the data.
The interval is the percentile interval of RESAMPLES replicates (2.5th and 97.5th percentiles),
widened if needed to include the estimate. Both aggregates are linear in the item scores, so
the paired difference of two reports is the bootstrap of the per-item differences.
"""

from collections.abc import Mapping, Sequence

import numpy as np

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95


def aggregate(groups: Mapping[str, Sequence[float]], how: str = "micro") -> float | None:
    """The point estimate; None when there are no items at all."""
    arrays = [np.asarray(v, dtype=float) for _, v in sorted(groups.items()) if len(v)]
    if not arrays:
        return None
    if how == "macro":
        return float(np.mean([a.mean() for a in arrays]))
    if how == "micro":
        return float(np.concatenate(arrays).mean())
    raise ValueError(f"unknown aggregate {how!r}")


def bootstrap(
    groups: Mapping[str, Sequence[float]], how: str = "micro", *, seed: int = SEED,
    resamples: int = RESAMPLES,
) -> tuple[float | None, list[float] | None]:
    """(estimate, [low, high]) with a stratified percentile bootstrap; (None, None) with no items."""
    estimate = aggregate(groups, how)
    if estimate is None:
        return None, None
    rng = np.random.default_rng(seed)
    sums, counts = [], []
    for _, values in sorted(groups.items()):
        a = np.asarray(values, dtype=float)
        if not len(a):
            continue
        idx = rng.integers(0, len(a), size=(resamples, len(a)))
        sums.append(a[idx].sum(axis=1))
        counts.append(len(a))
    sums_arr = np.stack(sums)  # [kinds, resamples]
    if how == "macro":
        reps = (sums_arr / np.asarray(counts)[:, None]).mean(axis=0)
    else:
        reps = sums_arr.sum(axis=0) / sum(counts)
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(reps, [tail, 100 - tail])
    return estimate, [min(float(low), estimate), max(float(high), estimate)]


def paired_bootstrap(
    a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]], how: str = "micro", *,
    seed: int = SEED, resamples: int = RESAMPLES,
) -> tuple[float | None, list[float] | None]:
    """The difference aggregate(a) - aggregate(b) over paired items (a[k][i] and b[k][i] are the same
    item) and its interval: items are resampled together, so what both models share cancels."""
    diffs = {}
    for kind in set(a) | set(b):
        xa, xb = np.asarray(a.get(kind, []), dtype=float), np.asarray(b.get(kind, []), dtype=float)
        if xa.shape != xb.shape:
            raise ValueError(f"kind {kind!r}: {len(xa)} scores against {len(xb)}; pair the items first")
        diffs[kind] = xa - xb
    return bootstrap(diffs, how, seed=seed, resamples=resamples)


def win_rate(
    a: Sequence[float], b: Sequence[float], *, higher_is_better: bool = True, seed: int = SEED,
    resamples: int = RESAMPLES,
) -> tuple[float | None, list[float] | None]:
    """Share of paired items where a beats b (ties count half) and its bootstrap interval."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.shape != xb.shape:
        raise ValueError(f"{len(xa)} scores against {len(xb)}; pair the items first")
    if not higher_is_better:
        xa, xb = -xa, -xb
    wins = np.where(np.isclose(xa, xb), 0.5, (xa > xb).astype(float))
    return bootstrap({"all": wins}, "micro", seed=seed, resamples=resamples)


def excludes_zero(ci: list[float] | None) -> bool:
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


def rounded(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def rounded_ci(ci: list[float] | None, digits: int = 4) -> list[float] | None:
    return None if ci is None else [round(ci[0], digits), round(ci[1], digits)]
