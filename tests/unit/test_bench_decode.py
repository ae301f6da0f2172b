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
