"""Model references and loading: the bundled default, HF dirs, GGUF files, and clear refusals."""

import json
import shutil

import pytest

from chatloop.errors import ModelRefError, UsageError
from chatloop.models.loading import load_model
from chatloop.models.manifest import verify_manifest
from chatloop.models.refs import bundled_gguf, resolve


def test_default_resolves_to_the_bundled_gguf():
    ref = resolve("default")
    assert ref.kind == "gguf" and ref.path == bundled_gguf() and ref.path.suffix == ".gguf"


def test_default_conversion_is_cached_with_a_verified_manifest(default_dir):
    manifest = verify_manifest(default_dir)
    assert manifest["name"] == "smollm2-135m-instruct"
    assert "model.safetensors" in manifest["files"] and "tokenizer.json" in manifest["files"]
    assert manifest["source"]["sha256"].startswith(manifest["version"].removeprefix("gguf-"))


def test_hf_directory_loads_with_its_manifest_identity(tiny_dir):
    loaded = load_model(str(tiny_dir), "float32")
    assert loaded.model_id == "tiny-llama:test"
    assert loaded.context_len == 512 and loaded.eos_token_ids


@pytest.mark.parametrize(
    "ref, match",
    [
        ("no-such-model", "unknown model 'no-such-model'"),
        ("Bad Name!", "unknown model reference"),
        ("runs:never-ran", "has no final model"),
        ("hf:not-a-repo-id", "not a Hub repository id"),
        ("hf:org/not-in-cache", "not in the local Hugging Face cache"),
        ("smollm2-135m-instruct:no-such-version", "unknown model version"),
        ("/nonexistent/model.gguf", "GGUF file not found"),
        ("", "empty model reference"),
    ],
)
def test_bad_references_are_refused(ref, match):
    with pytest.raises(ModelRefError, match=match):
        resolve(ref)


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelRefError, match="no config.json"):
        resolve(str(tmp_path))


def test_unsupported_architecture_is_refused(tmp_path, tiny_dir):
    bad = tmp_path / "gpt2ish"
    shutil.copytree(tiny_dir, bad)
    (bad / "manifest.json").unlink()
    config = json.loads((bad / "config.json").read_text())
    config["model_type"] = "gpt2"
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelRefError, match="unsupported architecture 'gpt2'"):
        load_model(str(bad))


def test_corrupt_manifest_is_refused(tmp_path, tiny_dir):
    bad = tmp_path / "corrupt"
    shutil.copytree(tiny_dir, bad)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(ModelRefError, match="corrupt manifest"):
        load_model(str(bad))


def test_tampered_weights_fail_verification(tmp_path, tiny_dir):
    bad = tmp_path / "tampered"
    shutil.copytree(tiny_dir, bad)
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelRefError, match="sha256 mismatch for model.safetensors"):
        load_model(str(bad))


def test_unknown_dtype_is_a_usage_error(tiny_dir):
    with pytest.raises(UsageError, match="unknown dtype"):
        load_model(str(tiny_dir), "float8")


def test_gguf_path_reference_shares_the_conversion_cache(default_dir):
    loaded = load_model(str(bundled_gguf()), "float32")
    assert loaded.path == default_dir
    assert loaded.model_id.startswith("smollm2-135m-instruct:gguf-")


def test_runs_reference_names_the_runs_final_model(tmp_path, monkeypatch, tiny_dir):
    monkeypatch.setenv("CHATLOOP_HOME", str(tmp_path))
    shutil.copytree(tiny_dir, tmp_path / "runs" / "my-sft" / "final")
    ref = resolve("runs:my-sft")
    assert ref.path == tmp_path / "runs" / "my-sft" / "final" and ref.model_id == "tiny-llama:test"
    assert load_model("runs:my-sft", "float32").model_id == "tiny-llama:test"


def test_stored_versions_resolve_by_name_and_version(tmp_path, monkeypatch, tiny_dir):
    monkeypatch.setenv("CHATLOOP_HOME", str(tmp_path))
    shutil.copytree(tiny_dir, tmp_path / "models" / "tiny-llama" / "test")
    assert resolve("tiny-llama:test").path == tmp_path / "models" / "tiny-llama" / "test"


def test_hub_references_come_from_the_local_hub_cache(tmp_path, monkeypatch, tiny_dir):
    """hf:ORG/NAME[@REV] through huggingface_hub's cache layout (offline: no download)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--someorg--tiny-chat"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_dir, repo / "snapshots" / commit)
    (repo / "snapshots" / commit / "manifest.json").unlink()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    ref = resolve("hf:someorg/tiny-chat")
    assert ref.path.name == commit and ref.model_id == "tiny-chat:0123456789ab"
    assert resolve(f"hf:someorg/tiny-chat@{commit}").model_id == ref.model_id


def test_a_directory_without_manifest_gets_a_version_that_follows_its_files(tmp_path, tiny_dir):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_dir, plain)
    (plain / "manifest.json").unlink()
    first = resolve(str(plain))
    assert first.model_id.startswith("plain:local-") and resolve(str(plain)) == first
    (plain / "generation_config.json").write_text("{}")
    assert resolve(str(plain)).model_id != first.model_id


def test_clients_cannot_name_paths(tiny_dir):
    with pytest.raises(ModelRefError, match="unknown model reference"):
        resolve(str(tiny_dir), allow_paths=False)
