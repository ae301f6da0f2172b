"""sha256 digests of directory trees: the one writer/verifier behind manifests and checkpoint markers."""

import hashlib

import pytest

from chatloop.errors import ModelRefError
from chatloop.fsutil import digest_tree, verify_digests
from chatloop.models.manifest import MANIFEST, manifest_id, verify_manifest, write_manifest


def _tree(root, files: dict[str, str]):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_digest_tree_lists_nested_files_except_the_marker(tmp_path):
    _tree(tmp_path, {"a.bin": "a", "sub/b.bin": "b", "MARK.json": "{}"})
    assert digest_tree(tmp_path, exclude="MARK.json") == {
        "a.bin": hashlib.sha256(b"a").hexdigest(), "sub/b.bin": hashlib.sha256(b"b").hexdigest(),
    }


def test_verify_digests_reports_each_kind_of_problem(tmp_path):
    _tree(tmp_path, {"a.bin": "a", "b.bin": "b", "c.bin": "c", "MARK.json": "{}"})
    listed = digest_tree(tmp_path, exclude="MARK.json")
    assert not verify_digests(tmp_path, listed, exclude="MARK.json", strict=True)
    (tmp_path / "a.bin").unlink()
    (tmp_path / "b.bin").write_text("B")
    (tmp_path / "new.bin").write_text("n")
    problems = verify_digests(tmp_path, listed, exclude="MARK.json", strict=True)
    assert (problems.missing, problems.mismatched, problems.unexpected) == (["a.bin"], ["b.bin"], ["new.bin"])
    lenient = verify_digests(tmp_path, listed, exclude="MARK.json", strict=False)
    assert lenient and lenient.unexpected == []


def test_manifest_allows_unlisted_files_and_names_the_model(tmp_path):
    _tree(tmp_path, {"model.safetensors": "w", "config.json": "{}"})
    manifest = write_manifest(tmp_path, name="tiny", version="v1", stage="sft")
    assert MANIFEST not in manifest["files"] and manifest_id(manifest) == "tiny:v1"
    (tmp_path / "notes.txt").write_text("added later")
    assert verify_manifest(tmp_path)["stage"] == "sft"
    (tmp_path / "config.json").unlink()
    with pytest.raises(ModelRefError, match="is missing config.json listed in its manifest"):
        verify_manifest(tmp_path)
