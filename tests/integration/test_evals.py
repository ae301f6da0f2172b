"""Evaluation on real engines: the mechanics on a tiny random model, the `eval` command through
Typer, and (slow) the full sycophancy suite on the default model."""

import json
import time

import pytest
import typer
from typer.testing import CliRunner

from chatloop.evals import evaluate
from chatloop.evals.cli import eval_command
from chatloop.evals.schema import SUITES, load_suite, select, suite_hash
from conftest import make_tiny_model


def _interval_ok(score, ci) -> bool:
    if score is None:
        return ci is None
    return 0 <= ci[0] <= score <= ci[1] <= 1


def test_evaluate_on_tiny_engine_with_limit(tiny_engine):
    report = evaluate(tiny_engine, limit=2)
    assert report["model"] == tiny_engine.model_id and report["limit"] == 2 and report["dtype"] == "float32"
    assert set(report["suites"]) == set(SUITES)
    for name, s in report["suites"].items():
        items = select(load_suite(name), 2)
        assert s["suite_hash"] == suite_hash(items)
        assert len(s["items"]) == len(items) == 2 * len(SUITES[name].kinds)
        assert [r["id"] for r in s["items"]] == [i.id for i in items]
        assert _interval_ok(s["score"], s["ci"])
        for kind, k in s["kinds"].items():
            assert k["asked"] == 2 and _interval_ok(k["score"], k["ci"])
        for r in s["items"]:
            assert {"id", "kind", "lang", "answers", "score", "finish_reasons"} <= set(r)
            assert all(isinstance(a, str) for a in r["answers"])
        assert s["completion_tokens"] > 0
    assert report["seconds"] > 0
    cap = report["suites"]["capability"]
    assert cap["n"] == 8 and cap["higher_is_better"]
    syc = report["suites"]["sycophancy"]
    for key in ("flip_rate", "flip_ci", "n", "flip_asked", "false_claim_agree_rate", "false_claim_ci",
                "flattery_rate", "flattery_ci", "score", "ci"):
        assert key in syc
    assert syc["flip_asked"] == 2 and 0 <= syc["n"] <= 2 and syc["false_claim_n"] == 2 and syc["flattery_n"] == 2
    assert _interval_ok(syc["flip_rate"], syc["flip_ci"]) and not syc["higher_is_better"]
    # Greedy decoding: the same model gives the same report.
    again = evaluate(tiny_engine, ["capability"], limit=2)["suites"]["capability"]
    assert [r["answers"] for r in again["items"]] == [r["answers"] for r in cap["items"]]


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("eval")(eval_command)

    @app.command("noop")
    def noop() -> None:  # a second command, so `eval` is a subcommand as in the real CLI
        pass

    return app


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tokenizer):
    return make_tiny_model(tmp_path_factory.mktemp("eval-tiny"), tokenizer, seed=3)


def test_eval_command_json(tiny_model_dir):
    result = CliRunner().invoke(_app(), ["eval", "--model", str(tiny_model_dir), "--suite", "sycophancy",
                                         "--limit", "2", "--dtype", "float32", "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)  # exactly one JSON object, nothing else
    assert out["model"] == "tiny-llama:test" and list(out["suites"]) == ["sycophancy"]
    syc = out["suites"]["sycophancy"]
    assert syc["flip_asked"] == 2 and "flip_rate" in syc and len(syc["suite_hash"]) == 64


def test_eval_command_against_and_table(tiny_model_dir, tiny_dir):
    result = CliRunner().invoke(_app(), ["eval", "-m", str(tiny_model_dir), "--against", str(tiny_dir),
                                         "--suite", "capability", "--limit", "1", "--dtype", "float32"])
    assert result.exit_code == 0, result.stderr
    assert "capability" in result.stdout and "paired: tiny-llama:test minus tiny-llama:test" in result.stdout
    assert "gate (default thresholds)" in result.stdout


def test_eval_command_against_json_with_reward_judge(tiny_model_dir, tiny_dir):
    result = CliRunner().invoke(_app(), [
        "eval", "-m", str(tiny_model_dir), "--against", str(tiny_dir), "--reward-model", str(tiny_dir),
        "-s", "capability", "--limit", "1", "--dtype", "float32", "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    cap = out["comparison"]["suites"]["capability"]
    assert cap["n"] == 4 and cap["same_items"] and _interval_ok(cap["win_rate"], cap["win_ci"])
    judge = cap["judge"]
    assert judge["n"] == 4 and _interval_ok(judge["win_rate"], judge["win_ci"])
    assert isinstance(out["gate"]["passed"], bool) and out["against"]["suites"]["capability"]["n"] == 4


@pytest.mark.parametrize("args,message", [
    (["--suite", "vibes"], "unknown suite 'vibes'"),
    (["--model", "no/such/model.gguf"], "GGUF file not found"),
    (["--dtype", "float8"], "unknown dtype 'float8'"),
    (["--reward-model", "default"], "--reward-model judges two models"),
])
def test_eval_command_bad_input_exits_2(args, message):
    result = CliRunner().invoke(_app(), ["eval", *args, "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.slow
def test_default_model_full_sycophancy_and_capability(default_engine):
    t0 = time.perf_counter()
    report = evaluate(default_engine, ["sycophancy", "capability"])
    seconds = time.perf_counter() - t0
    syc, cap = report["suites"]["sycophancy"], report["suites"]["capability"]
    flips = [i for i in load_suite("sycophancy") if i.kind == "flip"]
    assert syc["flip_asked"] == len(flips) >= 30
    assert 0 <= syc["flip_rate"] <= 1 and syc["n"] >= 30
    assert syc["flip_ci"][0] <= syc["flip_rate"] <= syc["flip_ci"][1]
    assert 0 <= cap["score"] <= 1 and cap["n"] == len(load_suite("capability"))
    print(f"\n{report['model']} ({report['dtype']}), {seconds:.0f} s: "
          f"flip_rate {syc['flip_rate']:.3f} {syc['flip_ci']} n={syc['n']}/{syc['flip_asked']}; "
          f"false_claim_agree_rate {syc['false_claim_agree_rate']:.3f} {syc['false_claim_ci']}; "
          f"flattery_rate {syc['flattery_rate']:.3f} {syc['flattery_ci']}; sycophancy {syc['score']:.3f} "
          f"{syc['ci']}; capability {cap['score']:.3f} {cap['ci']} "
          + " ".join(f"{k}={v['score']:.2f}" for k, v in cap["kinds"].items()))
