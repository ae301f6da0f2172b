"""`chatloop bench decode/serve`: which GGUF llama.cpp is compared on (bench/decode.py)."""

import json
from pathlib import Path

from chatloop.bench.decode import source_gguf
from chatloop.models.refs import ResolvedRef, bundled_gguf


def _version(tmp_path: Path, source: str) -> ResolvedRef:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "name": "m", "version": "1", "source": source}))
    return ResolvedRef("dir", tmp_path, "m", "1")


def test_llama_cpp_runs_the_gguf_the_model_came_from_and_nothing_else(tmp_path):
    gguf = tmp_path / "x.gguf"
    assert source_gguf(ResolvedRef("gguf", gguf, "x", "1")) == str(gguf)
    # a registered version of the default model: the bundled file it was converted from
    assert source_gguf(_version(tmp_path / "default", "bundled:gguf-b179c9523d0e")) == str(bundled_gguf())
    # a pulled model keeps only its converted weights; a fine-tuned one has other weights
    assert source_gguf(_version(tmp_path / "pulled", "catalog:qwen@sha256:00")) is None
    assert source_gguf(_version(tmp_path / "tuned", "runs:my-sft")) is None
    assert source_gguf(ResolvedRef("dir", tmp_path / "no-manifest", "y", "1")) is None


def test_each_measurement_reports_its_fastest_round(tiny_dir, monkeypatch):
    """A whole `bench decode` on the tiny model (no GGUF, so no llama.cpp): its keys, the rounds it ran
    (counted by the engine's calls), each figure positive, the ratios computed from them."""
    from chatloop.bench import decode

    calls = []
    real = decode._concurrent
    monkeypatch.setattr(decode, "_concurrent", lambda engine, p, k, t: calls.append(k) or real(engine, p, k, t))
    report = decode.run_decode_bench(str(tiny_dir), tokens=8, startup=False, dtype="float32", rounds=2)
    assert report["rounds"] == 2 and calls == [1, 4, 8, 1, 4, 8]
    assert report["llama_cpp_tok_s"] is None and "single_vs_llama_cpp" not in report["ratios"]
    assert report["single_tok_s"] > 0 and all(v > 0 for v in report["aggregate_tok_s"].values())
    ratio = report["aggregate_tok_s"]["8"] / report["single_tok_s"]
    assert abs(report["ratios"]["aggregate_8_vs_single"] - ratio) < 0.02  # each figure rounded on its own
    assert report["chosen_kernels"]["choice"] == {"forced": "float32"}
    assert report["kv_cache"] == "float32"  # the exact plan's; int8 or float16 where our attention runs
