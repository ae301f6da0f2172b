"""Comparing two evaluation reports item by item (paired), optionally with a reward-model judge.

    from chatloop.evals import compare, evaluate
    result = compare(evaluate(engine_a), evaluate(engine_b))
    result["suites"]["capability"]["difference"], result["suites"]["capability"]["ci"]

From the command line: `chatloop eval --model runs:new --against default [--reward-model runs:rm]`.

Items are paired by id. Per suite (and per kind) the result holds the paired difference a - b of
the suite's score over the items both reports counted, with a paired bootstrap 95% interval, and a
programmatic win-rate of a over b: per item the *better* score wins (higher for capability, lower
for sycophancy, where a score is a sycophantic act), ties count half. With a judge (a reward model,
`RewardJudge.load(REF)`), each item's first answers are scored by the reward model and the judge's
win-rate of a over b is reported too.
"""

from chatloop.evals import stats
from chatloop.evals.schema import load_suite


def _pairs(sa: dict, sb: dict) -> list[tuple[dict, dict]]:
    """Records of items present in both reports, in a's order."""
    rb = {r["id"]: r for r in sb["items"]}
    return [(r, rb[r["id"]]) for r in sa["items"] if r["id"] in rb]


def _paired(pairs: list[tuple[dict, dict]], how: str, higher_is_better: bool) -> dict:
    counted = [(x, y) for x, y in pairs if x["score"] is not None and y["score"] is not None]
    ga: dict[str, list[float]] = {}
    gb: dict[str, list[float]] = {}
    for x, y in counted:
        ga.setdefault(x["kind"], []).append(x["score"])
        gb.setdefault(x["kind"], []).append(y["score"])
    diff, ci = stats.paired_bootstrap(ga, gb, how)
    sa = [x["score"] for x, _ in counted]
    sb = [y["score"] for _, y in counted]
    win, win_ci = stats.win_rate(sa, sb, higher_is_better=higher_is_better)
    return {
        "a": stats.rounded(stats.aggregate(ga, how)),
        "b": stats.rounded(stats.aggregate(gb, how)),
        "difference": stats.rounded(diff),
        "ci": stats.rounded_ci(ci),
        "significant": stats.excludes_zero(ci),
        "n": len(counted),
        "win_rate": stats.rounded(win),
        "win_ci": stats.rounded_ci(win_ci),
    }


def compare_suite(sa: dict, sb: dict, judge=None) -> dict:
    """Paired comparison of one suite's reports (a's numbers minus b's)."""
    pairs = _pairs(sa, sb)
    how, better = sa["aggregate"], sa["higher_is_better"]
    out = {
        "same_items": sa["suite_hash"] == sb["suite_hash"],
        "higher_is_better": better,
        "paired": len(pairs),
        **_paired(pairs, how, better),
        "kinds": {},
    }
    for kind in dict.fromkeys(x["kind"] for x, _ in pairs):
        out["kinds"][kind] = _paired([(x, y) for x, y in pairs if x["kind"] == kind], "micro", better)
    if judge is not None:
        out["judge"] = judge.compare(sa["suite"], pairs)
    return out


def compare(report_a: dict, report_b: dict, *, judge=None) -> dict:
    """Paired comparison of two `evaluate` reports, per suite present in both (a minus b).

    `judge`: an object with `compare(suite_name, pairs) -> dict` (e.g. RewardJudge)."""
    sa, sb = report_a["suites"], report_b["suites"]
    return {
        "a": report_a.get("model"),
        "b": report_b.get("model"),
        "suites": {name: compare_suite(sa[name], sb[name], judge) for name in sa if name in sb},
        "unpaired_suites": sorted(set(sa) ^ set(sb)),
    }


class RewardJudge:
    """A reward model (chatloop.train.reward) as judge: for each item, the first answer of a and of b
    to the item's prompt are scored; a wins when its reward is higher (equal answers tie)."""

    def __init__(self, model, tokenizer, name: str):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.model.eval()

    @classmethod
    def load(cls, ref: str) -> "RewardJudge":
        from chatloop.train.reward import load_reward_model

        model, tokenizer, model_id = load_reward_model(ref)
        return cls(model, tokenizer, model_id)

    def reward(self, prompt: list[dict], answer: str) -> float:
        from chatloop.train.reward import score

        return score(self.model, self.tokenizer, prompt, {"role": "assistant", "content": answer})

    def compare(self, suite: str, pairs: list[tuple[dict, dict]]) -> dict:
        prompts = {item.id: item.chat() for item in load_suite(suite)}
        ra, rb = [], []
        for x, y in pairs:
            prompt = prompts.get(x["id"])
            if prompt is None:  # a report from an older version of the suite: the item is gone
                continue
            a, b = x["answers"][0], y["answers"][0]
            ra.append(self.reward(prompt, a))
            rb.append(ra[-1] if a == b else self.reward(prompt, b))
        win, ci = stats.win_rate(ra, rb)
        return {
            "model": self.name,
            "win_rate": stats.rounded(win),
            "win_ci": stats.rounded_ci(ci),
            "n": len(ra),
            "mean_reward_a": stats.rounded(sum(ra) / len(ra)) if ra else None,
            "mean_reward_b": stats.rounded(sum(rb) / len(rb)) if rb else None,
        }
