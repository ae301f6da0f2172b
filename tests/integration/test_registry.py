"""The model registry on SQLite and PostgreSQL: versions with lineage, immutable artifacts, channels,
release actions with an audit log, and the resolver every command uses."""

import json

import pytest

from chatloop.errors import ModelRefError, NotFoundError, UsageError
from chatloop.models.manifest import read_manifest, verify_manifest
from chatloop.registry import releases
from chatloop.registry.resolve import resolve_ref
from chatloop.registry.versions import import_ref, list_versions, register
from conftest import make_tiny_model


@pytest.fixture()
def db(database, tmp_path, monkeypatch):
    monkeypatch.setenv("CHATLOOP_HOME", str(tmp_path / "home"))
    return database


@pytest.fixture()
def tiny_run(tmp_path, tokenizer):
    """A directory shaped like a training run's final/: a manifest with lineage."""
    from chatloop.models.manifest import write_manifest

    final = make_tiny_model(tmp_path / "run" / "final", tokenizer, seed=4, name="my-run")
    write_manifest(final, name="my-run", version="sft-step8", stage="sft", parent="base:1",
                   data_sha256="ab" * 32, config={"lr": 0.001}, metrics={"last_loss": 1.5})
    return final


def test_versions_are_numbered_immutable_and_keep_their_lineage(db, tiny_run, tiny_dir, tokenizer):
    with db.session() as s:
        first = register(s, tiny_dir, "tiny", source_label=str(tiny_dir), actor="me@example.com")
        second = register(s, tiny_run, "tiny", source_label="runs:my-run")
    assert (first.version, second.version) == ("1", "2")
    assert (second.parent, second.stage, second.data_hash) == ("base:1", "sft", "ab" * 32)
    assert json.loads(second.metrics) == {"last_loss": 1.5} and first.created_by == "me@example.com"
    manifest = verify_manifest(second_path := tiny_run.parents[1] / "home" / "models" / "tiny" / "2")
    assert (manifest["name"], manifest["version"], manifest["parent"]) == ("tiny", "2", "base:1")
    # the stored version does not change when its source is replaced (a retrained run)
    weights = (second_path / "model.safetensors").read_bytes()
    (tiny_run / "model.safetensors").unlink()
    make_tiny_model(tiny_run, tokenizer, seed=9)
    assert (second_path / "model.safetensors").read_bytes() == weights
    with db.session() as s:
        assert [v.version for v in list_versions(s, "tiny")] == ["1", "2"]
        with pytest.raises(UsageError, match="already registered|immutable"):
            register(s, tiny_dir, "tiny", source_label="again", version="2")


def test_a_tampered_source_is_refused(db, tiny_run):
    blob = tiny_run / "model.safetensors"
    blob.write_bytes(blob.read_bytes()[:-10])
    with db.session() as s, pytest.raises(ModelRefError, match="sha256 mismatch"):
        register(s, tiny_run, "tiny", source_label="x")


def test_promote_canary_and_rollback_with_an_audit_log(db, tiny_dir, tiny_run):
    with db.session() as s:
        for _ in range(3):
            register(s, tiny_dir, "m", source_label="test")
        releases.promote(s, "m", "1", actor="alice")
        with pytest.raises(UsageError, match="already the stable"):
            releases.promote(s, "m", "1")
        with pytest.raises(NotFoundError):
            releases.promote(s, "m", "9")
        releases.set_canary(s, "m", "2", 50, actor="alice")
        assert releases.channels(s, "m") == releases.Channels("m", "1", "2", 50)
        with pytest.raises(UsageError, match="between 1 and 100"):
            releases.set_canary(s, "m", "3", 0)
        event = releases.rollback(s, "m", actor="bob", reason="bad answers")  # ends the canary first
        assert event.action == "end-canary" and releases.channels(s, "m") == releases.Channels("m", "1")
        releases.set_canary(s, "m", "2", 10)
        releases.promote(s, "m", "2", actor="alice")  # the canary graduates
        assert releases.channels(s, "m") == releases.Channels("m", "2")
        releases.promote(s, "m", "3")
        assert releases.rollback(s, "m").version == "2"
        assert releases.rollback(s, "m").version == "1"
        with pytest.raises(UsageError, match="no earlier stable"):
            releases.rollback(s, "m")
        actions = [(e.action, e.version, e.previous) for e in reversed(releases.history(s, "m"))]
    assert actions == [
        ("register", "1", None), ("register", "2", None), ("register", "3", None), ("promote", "1", None),
        ("canary", "2", None), ("end-canary", "1", "2"), ("canary", "2", None), ("promote", "2", "1"),
        ("promote", "3", "2"), ("rollback", "2", "3"), ("rollback", "1", "2")]


def test_canary_picks_are_sticky_and_near_the_share(db, tiny_dir):
    with db.session() as s:
        register(s, tiny_dir, "m", source_label="test")
        register(s, tiny_dir, "m", source_label="test")
        releases.promote(s, "m", "1")
        releases.set_canary(s, "m", "2", 30)
        table = releases.release_table(s)
    picks = [table.pick("m", key=f"conversation-{i}") for i in range(2000)]
    assert picks[:50] == [table.pick("m", key=f"conversation-{i}") for i in range(50)]  # sticky
    share = sum(channel == "canary" for _, channel in picks) / len(picks)
    assert 0.26 < share < 0.34
    assert table.pick("m", channel="canary") == ("2", "canary")
    assert table.pick("m", channel="stable") == ("1", "stable")


def test_the_resolver_serves_every_form(db, tiny_dir, tiny_run, monkeypatch):
    with db.session() as s:
        import_ref(s, str(tiny_dir), "m")
        import_ref(s, str(tiny_run), "m")
        releases.promote(s, "m", "1")
        releases.set_canary(s, "m", "2", 5)
    assert resolve_ref("m", db).model_id == "m:1"
    assert resolve_ref("m@canary", db).model_id == "m:2"
    assert resolve_ref("m:2", db).model_id == "m:2"
    assert resolve_ref(str(tiny_dir), db).model_id == "tiny-llama:test"
    with pytest.raises(ModelRefError, match="no registered model"):
        resolve_ref("nobody", db)
    with pytest.raises(ModelRefError, match="unknown channel"):
        resolve_ref("m@beta", db)
    assert read_manifest(resolve_ref("m:2", db).path)["source"] == str(tiny_run)


def test_a_finished_run_registers_its_output_with_lineage(db, tiny_run, monkeypatch):
    """`chatloop train STAGE ... --register NAME` (the step after a run publishes final/)."""
    from chatloop.registry.versions import get_version
    from chatloop.train.cli import _register

    monkeypatch.setenv("CHATLOOP_DATABASE_URL", db.url)
    assert _register(tiny_run, "m", "my-run") == "m:1"
    with db.session() as s:
        row = get_version(s, "m", "1")
        assert (row.source, row.parent, row.stage, row.data_hash) == ("runs:my-run", "base:1", "sft", "ab" * 32)
    with pytest.raises(UsageError, match="wrote no model"):
        _register(tiny_run.parent / "nothing", "m", "my-run")


def test_a_stage_config_naming_a_registered_model_starts_from_its_stable_version(tmp_path, monkeypatch, tiny_dir):
    """`model: NAME` in a stage config (a pulled model, an earlier turn's output) is pinned to the exact
    version its stable channel names when the run starts; the run's config and lineage keep that."""
    from chatloop.config import get_settings
    from chatloop.store.db import Database
    from chatloop.train.cli import pin_registry_refs
    from chatloop.train.common import model_dir
    from chatloop.train.sft import SFTStageConfig

    monkeypatch.setenv("CHATLOOP_HOME", str(tmp_path / "home"))
    db = Database(get_settings().db_url)
    with db.session() as s:
        register(s, tiny_dir, "base", source_label="test")
        register(s, tiny_dir, "base", source_label="test again")
        releases.promote(s, "base", "2")
    cfg = pin_registry_refs(SFTStageConfig(run_name="x", model="base", data=["synthetic:sft:8:en"]))
    assert cfg.model == "base:2"
    assert model_dir(cfg.model) == tmp_path / "home" / "models" / "base" / "2"
    assert pin_registry_refs(SFTStageConfig(run_name="x", model="base:1", data=["x"])).model == "base:1"
    with pytest.raises(ModelRefError, match="no canary running"):
        pin_registry_refs(SFTStageConfig(run_name="x", model="base@canary", data=["x"]))
    db.dispose()
