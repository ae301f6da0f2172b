"""Weight formats, kernel plans and `--dtype auto`'s measured choice (engine/quant.py, engine/kernels.py)."""

import json

import pytest
import torch

from chatloop.engine import kernels
from chatloop.engine.quant import FORMATS, MANY, PREFILL_ROWS, KernelPlan, PackedLinear, formats_for, pick
from chatloop.hardware import capped_below, native_bf16

# Worst relative error of one matmul against float32, per format (random weights, no outliers).
TOLERANCE = {"float32": 1e-6, "float32-onednn": 1e-5, "bfloat16": 0.02, "int8": 0.03, "int4": 0.25,
             "int8-avx2": 0.03, "int4-avx2": 0.25, "int8-avx2-a8": 0.03, "int4-avx2-a8": 0.25}


def _relative_error(y, ref):
    return ((y.float() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rows", [1, 5])
def test_each_format_computes_the_same_product_within_its_precision(fmt, rows):
    torch.manual_seed(0)
    weight, bias, x = torch.randn(96, 128), torch.randn(96), torch.randn(rows, 128)
    ref = torch.nn.functional.linear(x, weight, bias)
    for act in ("float32", "bfloat16"):
        if fmt not in formats_for(act):
            continue
        lin = PackedLinear(weight, bias, ((MANY, fmt),), act)
        y = lin(x.to(lin.act))
        assert y.shape == (rows, 96) and y.dtype == lin.act
        # bf16 activations add their own rounding on top of the format's
        tol = TOLERANCE[fmt] + (0.02 if act == "bfloat16" else 0)
        assert _relative_error(y, ref) < tol, (fmt, act)


def test_float32_is_exactly_what_transformers_computes():
    torch.manual_seed(1)
    weight, x = torch.randn(64, 64), torch.randn(2, 3, 64)
    assert torch.equal(PackedLinear(weight, None, ((MANY, "float32"),), "float32")(x),
                       torch.nn.functional.linear(x, weight))


def test_a_plan_serves_each_number_of_rows_with_its_format():
    torch.manual_seed(2)
    weight, x = torch.randn(64, 128), torch.randn(6, 128)
    mixed = PackedLinear(weight, None, ((1, "int4"), (MANY, "float32")), "float32")
    int4 = PackedLinear(weight, None, ((MANY, "int4"),), "float32")
    exact = PackedLinear(weight, None, ((MANY, "float32"),), "float32")
    assert torch.equal(mixed(x[:1]), int4(x[:1])) and not torch.equal(mixed(x[:1]), exact(x[:1]))
    assert torch.equal(mixed(x), exact(x))


def test_int4_needs_whole_groups():
    with pytest.raises(ValueError, match="divisible by 32"):
        PackedLinear(torch.randn(8, 40), None, ((MANY, "int4"),), "float32")


def test_uniform_plans_keep_a_dense_output_projection_and_round_trip_through_json():
    plan = KernelPlan.uniform("int8")
    assert plan.act == ("bfloat16" if native_bf16() else "float32")
    assert plan.head == ((MANY, "bfloat16" if native_bf16() else "float32"),)
    assert KernelPlan.uniform("float32") == KernelPlan("float32", ((MANY, "float32"),), ((MANY, "float32"),))
    assert KernelPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    with pytest.raises(ValueError, match="cannot run"):
        KernelPlan.from_json({"act": "float32", "body": [[MANY, "bfloat16"]], "head": [[MANY, "float32"]]})


def test_caps_on_the_kernels_turn_native_bf16_off(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert capped_below("AVX512_CORE_BF16") and not native_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
    assert not capped_below("AVX512_CORE_BF16")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert not native_bf16()


def _fake(step_ms: dict, ppl: dict, prefill_ms: dict, head_ms: dict, head_ppl: dict) -> dict:
    def entry(ms, p, pre=None):
        out = {"step_s": {str(r): v / 1000 for r, v in ms.items()}, "ppl": p}
        if pre is not None:  # ms, or per prefill size {tokens: ms}
            sizes = pre if isinstance(pre, dict) else {n: pre for n in kernels.PREFILLS}
            out["prefill_s"] = {str(n): v / 1000 for n, v in sizes.items()}
        return out

    acts = {}
    for act, fmts in step_ms.items():
        acts[act] = {"body": {f: entry(ms, ppl[act][f], prefill_ms[act][f]) for f, ms in fmts.items()},
                     "head": {f: entry(ms, head_ppl[act][f]) for f, ms in head_ms[act].items()}}
    return {"rows": [1, 8], "acts": acts, "float32_ppl": 10.0}


def test_decide_picks_the_fastest_format_per_case_within_the_budget():
    results = _fake(
        step_ms={"float32": {"float32": {1: 30, 8: 50}, "int8": {1: 15, 8: 90}, "int4": {1: 10, 8: 120}},
                 "bfloat16": {"bfloat16": {1: 60, 8: 70}, "int8": {1: 40, 8: 150}}},
        ppl={"float32": {"float32": 10.0, "int8": 10.1, "int4": 10.5},  # int4: +5%, over a 2% budget
             "bfloat16": {"bfloat16": 10.05, "int8": 10.1}},
        prefill_ms={"float32": {"float32": 100, "int8": 300, "int4": 400},
                    "bfloat16": {"bfloat16": 200, "int8": 500}},
        head_ms={"float32": {"float32": {1: 5, 8: 6}, "int8": {1: 2, 8: 9}},
                 "bfloat16": {"bfloat16": {1: 8, 8: 9}, "int8": {1: 4, 8: 12}}},
        head_ppl={"float32": {"float32": 10.0, "int8": 10.15}, "bfloat16": {"bfloat16": 10.0, "int8": 10.1}},
    )
    plan, summary = kernels.decide(results, budget=0.02)
    assert summary["chosen"] == "float32"  # bf16 is slower in every case on this "machine"
    assert plan == KernelPlan("float32", ((1, "int8"), (MANY, "float32")), ((1, "int8"), (MANY, "float32")))
    loose, _ = kernels.decide(results, budget=0.10)
    assert loose.body[0] == (1, "int4")
    strict, summary = kernels.decide(results, budget=0.0)
    assert strict == KernelPlan.uniform("float32")


def test_formats_that_round_the_activations_to_8_bits_serve_batches_not_one_row_or_prefill():
    """One row is bound by the bytes of weights, where 8-bit activations gain nothing but their
    rounding: int4-avx2-a8 is not chosen there even when measured a little faster. Nor for the
    prefill, which gives every answer its first token, even when measured much faster."""
    results = _fake(
        step_ms={"float32": {"float32": {1: 30, 8: 50}, "int4-avx2": {1: 10, 8: 40}, "int4-avx2-a8": {1: 9, 8: 25}}},
        ppl={"float32": {"float32": 10.0, "int4-avx2": 10.05, "int4-avx2-a8": 10.08}},
        prefill_ms={"float32": {"float32": 100, "int4-avx2": 90, "int4-avx2-a8": 60}},
        head_ms={"float32": {"float32": {1: 5, 8: 6}}}, head_ppl={"float32": {"float32": 10.0}},
    )
    plan, _ = kernels.decide(results, budget=0.02)
    assert plan.body == ((1, "int4-avx2"), (8, "int4-avx2-a8"), (MANY, "int4-avx2"))


def test_every_prefill_takes_the_format_fastest_a_token_over_short_and_long_prompts():
    """As measured on a Zen 4: 4-bit weights a little ahead for a short prompt, 8-bit ones for a long
    one; every prefill (quant.PREFILL_ROWS) takes 8-bit, decoding batches over SHORT_UP_TO rows too."""
    short, long = kernels.PREFILLS
    results = _fake(
        step_ms={"float32": {"float32": {1: 30, 8: 50}, "int4-avx2": {1: 3, 8: 8}, "int8-avx2": {1: 3.5, 8: 8.5}}},
        ppl={"float32": {"float32": 10.0, "int4-avx2": 10.05, "int8-avx2": 10.02}},
        prefill_ms={"float32": {"float32": {short: 58, long: 180}, "int4-avx2": {short: 26.9, long: 95.4},
                                "int8-avx2": {short: 27.6, long: 89.4}}},
        head_ms={"float32": {"float32": {1: 5, 8: 6}}}, head_ppl={"float32": {"float32": 10.0}},
    )
    plan, _ = kernels.decide(results, budget=0.02)
    assert plan.body == ((8, "int4-avx2"), (MANY, "int8-avx2"))
    assert pick(plan.body, PREFILL_ROWS) == "int8-avx2"
    # much slower for short prompts: not taken, although still ahead for long ones
    results["acts"]["float32"]["body"]["int8-avx2"]["prefill_s"][str(short)] = 0.040
    plan, _ = kernels.decide(results, budget=0.02)
    assert plan.body == ((kernels.SHORT_UP_TO, "int4-avx2"), (MANY, "int8-avx2"))


def test_decoding_batches_past_short_up_to_rows_take_the_long_prefills_format():
    short, long = kernels.PREFILLS
    results = _fake(
        step_ms={"float32": {"float32": {1: 30, 8: 50}, "int8-avx2": {1: 12, 8: 45}}},
        ppl={"float32": {"float32": 10.0, "int8-avx2": 10.05}},
        prefill_ms={"float32": {"float32": {short: 60, long: 200}, "int8-avx2": {short: 45, long: 210}}},
        head_ms={"float32": {"float32": {1: 5, 8: 6}}}, head_ppl={"float32": {"float32": 10.0}},
    )
    plan, _ = kernels.decide(results, budget=0.02)
    assert plan.body == ((kernels.SHORT_UP_TO, "int8-avx2"), (MANY, "float32"))
    assert short <= kernels.SHORT_UP_TO < long


def test_contending_formats_are_timed_again_in_turn_and_keep_their_fastest_time(monkeypatch):
    """A neighbour slowed the first round of a8 (14 ms for 8 rows): timed again in turn with int8-avx2
    it shows its own time and wins; float32, far behind in every case, is not timed again."""
    short, long = (str(n) for n in kernels.PREFILLS)

    def times(one, eight, prefill):
        return {"step_s": {"1": one, "8": eight}, "prefill_s": {short: prefill, long: 4 * prefill}}

    body = {"float32": times(0.030, 0.050, 0.100), "int8-avx2": times(0.006, 0.0127, 0.050),
            "int4-avx2-a8": times(0.005, 0.0144, 0.045)}
    later = {"int8-avx2": [times(0.007, 0.0141, 0.049)] * 2,
             "int4-avx2-a8": [times(0.0045, 0.0096, 0.044), times(0.006, 0.0150, 0.047)]}
    timed = []

    def time_layers(runner, rows_list, ids, reps):
        timed.append(runner)
        t = later[runner].pop(0)
        return t["step_s"], t["prefill_s"]

    monkeypatch.setattr(kernels, "_time_layers", time_layers)
    kept = {f: f for f in body}  # (the runners: here their names)
    kernels._retime(body, kept, [1, 8], [], 3)
    assert timed == ["int8-avx2", "int4-avx2-a8"] * (kernels.ROUNDS - 1)
    assert body["int4-avx2-a8"]["step_s"] == {"1": 0.0045, "8": 0.0096}
    assert body["int8-avx2"]["step_s"] == {"1": 0.006, "8": 0.0127}  # each case its fastest round
    assert body["float32"] == times(0.030, 0.050, 0.100)
    kernels._retime(body, {}, [1, 8], [], 3)  # nothing kept (no room): nothing to time again
    slow = {"bfloat16": times(0.040, 0.060, 0.300), "int8": times(0.030, 0.055, 0.200)}
    kernels._retime(slow, {f: f for f in slow}, [1, 8], [], 3, rivals=[body])
    assert len(timed) == 2 * (kernels.ROUNDS - 1)  # over 1.5x float32's formats in every case: not again


def test_auto_measures_once_per_machine_and_model_then_reads_the_cache(tiny_dir, tmp_path, monkeypatch):
    from chatloop.models.loading import load_model

    monkeypatch.setenv("CHATLOOP_HOME", str(tmp_path))
    loaded = load_model(str(tiny_dir), "float32")
    plan, summary = kernels.choose_plan(loaded.model, loaded.tokenizer, loaded.model_id)
    assert summary["chosen"] in ("float32", "bfloat16") and "cached" not in summary
    files = list((tmp_path / "kernels").rglob("*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["model"] == "tiny-llama:test" and record["machine"]["torch"] == torch.__version__
    f32 = record["measurements"]["acts"]["float32"]
    assert set(f32["body"]) == set(formats_for("float32"))
    # the layers are timed with a fast output projection where ours runs, and scored with the dense one
    fast_head = "int8-avx2" in formats_for("float32") and loaded.model.lm_head.weight.shape[0] % 16 == 0
    assert f32["timing_head"] == ("int8-avx2" if fast_head else "float32")
    assert f32["body"]["float32"]["ppl"] == f32["head"]["float32"]["ppl"]

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(kernels, "measure", no_measuring)
    again, summary = kernels.choose_plan(loaded.model, loaded.tokenizer, loaded.model_id)
    assert again == plan and summary["cached"] == str(files[0])
    # other kernels (an upgrade changed lowbit.c): their speeds were not measured, so they are
    monkeypatch.setattr(kernels.lowbit, "source_key", lambda: "another-source")
    with pytest.raises(AssertionError, match="measured again"):
        kernels.choose_plan(loaded.model, loaded.tokenizer, loaded.model_id)


def test_a_quantised_format_slower_than_dense_for_one_row_is_measured_no_further(tiny_dir, monkeypatch):
    from chatloop.models.loading import load_model

    loaded = load_model(str(tiny_dir), "float32")
    monkeypatch.setattr(kernels, "SLOWER_BY", 0.0)  # every quantised format now counts as too slow
    results = kernels.measure(loaded.model, list(range(5, 70)), rows_list=(1, 2), reps=1)
    for act, m in results["acts"].items():
        for fmt in ("int8", "int4"):
            assert "over 0.0x the dense format" in m["body"][fmt]["skipped"], (act, fmt)
            assert "skipped" in m["head"].get(fmt, {"skipped": "not measured"}), (act, fmt)
        assert "ppl" in m["body"][formats_for(act)[0]]
    plan, _ = kernels.decide(results, budget=0.05)
    dense = {"float32", "float32-onednn", "bfloat16"}
    assert {f for _, f in plan.body} <= dense
    # the output projection the layers were timed with is always measured in full, so it may win
    assert {f for _, f in plan.head} <= dense | {results["acts"][plan.act]["timing_head"]}


@pytest.mark.parametrize("fmt", ["float32-onednn", "int8-avx2", "int4-avx2", "int8-avx2-a8", "int4-avx2-a8"])
def test_rows_of_different_lengths_decode_in_a_batch_as_they_do_alone(tiny_dir, fmt):
    """The fused path's batched decoding (masked attention through batched products, one indexed
    write of the new keys and values, our kernels' norm and residual) gives each row what it gets
    decoding alone (SDPA without a mask): the same logits up to float rounding. (Where our kernels
    run, the packed prefill attends through our attention and a lone prompt through SDPA: the same
    inputs, another order of sums and exp; our formats' int16 activations can turn such a last bit
    into a quantum, which this tiny model's large random weights amplify to ~2e-3 on logits of ~10. A
    wrong slot or position would be off by the size of the logits.)"""
    from chatloop.engine.runner import ModelRunner
    from chatloop.models.loading import load_model

    if fmt not in formats_for("float32"):
        pytest.skip(f"{fmt} does not run here")
    model = load_model(str(tiny_dir), "float32").model
    plan = KernelPlan.uniform(fmt, "float32", head=fmt)
    prompts = [list(range(10, 17)), list(range(30, 50)), list(range(60, 63))]
    batch = ModelRunner(model, plan, max_slots=3, max_len=64)
    batch.prefill(prompts)
    alone = [ModelRunner(model, plan, max_slots=1, max_len=64) for _ in prompts]
    for runner, prompt in zip(alone, prompts):
        runner.prefill([prompt])
    for step in range(4):
        tokens = [5 + step, 7 + step, 9 + step]
        together = batch.decode(tokens)
        for i, runner in enumerate(alone):
            assert torch.allclose(together[i], runner.decode([tokens[i]])[0], rtol=1e-3, atol=3e-3), (step, i)


@pytest.mark.parametrize("cache", ["float16", "int8"])
@pytest.mark.parametrize("model_type", ["llama", "qwen2"])  # qwen2: q, k and v have biases
@pytest.mark.parametrize("fmt", ["int8-avx2", "int4-avx2", "int8-avx2-a8", "int4-avx2-a8"])
def test_a_decoding_step_in_one_call_equals_it_layer_by_layer(tokenizer, tmp_path, model_type, fmt, cache):
    """lowbit.decode_step (every layer in one C call: rotary embedding, cache writes, attention,
    projections) against the same runner stepping layer by layer, one row and three rows of different
    lengths (one past 1,024 positions: its attention in parts), through a cache that grows in between;
    a float16 cache and an int8 one (heads of 32).
    Equal up to float rounding (the rotary embedding's order of operations; the activations' int16
    rounding can carry a last bit into a quantum, and this tiny model's large random weights amplify
    it): a wrong position, slot or cache would be off by the size of the logits themselves."""
    from conftest import make_tiny_model

    from chatloop.engine import runner as runner_module
    from chatloop.engine.runner import ModelRunner
    from chatloop.models.loading import load_model

    if fmt not in formats_for("float32"):
        pytest.skip(f"{fmt} does not run here")
    hidden = 128 if cache == "int8" else 64
    model = load_model(str(make_tiny_model(tmp_path / model_type, tokenizer, model_type, seed=4, hidden=hidden)),
                       "float32").model
    plan = KernelPlan.uniform(fmt, "float32", head=fmt)
    runners = [ModelRunner(model, plan, max_slots=3, max_len=1200, kv_cache=cache) for _ in range(2)]
    assert runners[0].cache_dtype == getattr(torch, cache)
    runners[1].one_call_steps = False
    # the second row's history is longer than an attention task's part of it (lowbit.c's SPLIT)
    prompts = [list(range(10, 17)), [30 + i % 900 for i in range(1100)], list(range(60, 63))]
    for runner in runners:
        runner.prefill(prompts[:1])
    assert runners[0]._native_step(1) is not None and runners[1]._native_step(1) is None
    for step in range(3):  # one row
        ours, theirs = (r.decode([5 + step]) for r in runners)
        assert ((ours - theirs).norm() / theirs.norm()).item() < 1e-3, step
    for runner in runners:
        runner.prefill(prompts[1:])  # the cache grows past its first 256 positions
    assert runners[0].capacity > runner_module.CACHE_GROWTH
    for step in range(3):
        tokens = [5 + step, 7 + step, 9 + step]
        ours, theirs = (r.decode(tokens) for r in runners)
        assert ((ours - theirs).norm() / theirs.norm()).item() < 1e-3, step


def test_versions_of_one_architecture_share_one_measurement(tiny_dir, tmp_path, monkeypatch):
    """A fine-tuned child (other weights, other version, same shapes) is served with its parent's plan
    at once; another architecture is measured."""
    from chatloop.models.loading import load_model

    monkeypatch.setenv("CHATLOOP_HOME", str(tmp_path / "home"))
    loaded = load_model(str(tiny_dir), "float32")
    plan, _ = kernels.choose_plan(loaded.model, loaded.tokenizer, loaded.model_id)
    child = load_model(str(tiny_dir), "float32").model
    with torch.no_grad():
        for p in child.parameters():
            p.add_(0.01)
    measured = []
    monkeypatch.setattr(kernels, "measure", lambda *a, **k: measured.append(1) or {})
    again, summary = kernels.choose_plan(child, loaded.tokenizer, "tiny-llama:2")
    assert again == plan and "cached" in summary and not measured
    assert len(list((tmp_path / "home" / "kernels").rglob("*.json"))) == 1
    child.config.num_hidden_layers += 1  # another shape: its own measurement
    with pytest.raises(Exception):
        kernels.choose_plan(child, loaded.tokenizer, "tiny-llama:3")
    assert measured == [1]
