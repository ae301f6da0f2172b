"""`chatloop backup` / `chatloop restore` without a server: a restore brings back every row and
model version (SQLite and PostgreSQL), and refuses a modified, truncated or foreign archive, naming
the member, and a home that already holds data unless --force. The backup of a serving server is
in test_backup_serving.py."""

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from conftest import make_tiny_model
from server_util import database_url
from sqlalchemy import inspect, select

from chatloop.errors import ModelRefError, NotFoundError, UsageError
from chatloop.fsutil import sha256_file
from chatloop.models.manifest import verify_manifest
from chatloop.registry import releases
from chatloop.registry.backup import ARCHIVE_MANIFEST, backup, restore
from chatloop.registry.versions import import_ref
from chatloop.store import accounts, feedback
from chatloop.store import conversations as convs
from chatloop.store.backup import COUNTED
from chatloop.store.db import Database
from chatloop.store.documents import NewChunk, add_document
from chatloop.store.models import ApiKey, Attachment, ModelVersion


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory, tokenizer) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-src"), tokenizer)


def fill(db: Database, tiny_src: Path) -> dict:
    """Users, keys, a conversation with a regenerated answer, feedback, a comparison, a correction, a
    document, an image upload, and two registered versions of `tiny` (1 stable)."""
    with db.session() as s:
        alice = accounts.create_user(s, "alice@example.com", "long enough")
        bob = accounts.create_user(s, "bob@example.com", "long enough too")
        _, secret = accounts.create_key(s, alice.id, "laptop")
        conv = convs.Conversation(user_id=alice.id, title="Backups", system_prompt="Be brief.")
        s.add(conv)
    with db.session() as s:
        ctx = convs.read_turn(s, alice.id, conv.id, "What is a backup?", None)
        user_msg, (first,) = convs.commit_turn(s, alice.id, ctx, [{"model_version": "tiny:1", "temperature": 0.7}])
    with db.session() as s:
        convs.finish_answer(s, first.id, text="A copy.", status="complete", finish_reason="stop", tool_calls=None,
                            usage={"prompt_tokens": 9, "completion_tokens": 3}, title=False)
    with db.session() as s:
        ctx = convs.read_turn(s, alice.id, conv.id, None, user_msg.id)
        _, (second,) = convs.commit_turn(s, alice.id, ctx, [{"model_version": "tiny:1", "temperature": 0.7}])
    with db.session() as s:
        convs.finish_answer(s, second.id, text="A second copy.", status="complete", finish_reason="stop",
                            tool_calls=None, usage={"prompt_tokens": 9, "completion_tokens": 4}, title=False)
        feedback.rate(s, alice.id, first.id, -1, ["too_short"], "say more")
        feedback.rate(s, alice.id, second.id, 1, [], "")
        feedback.compare(s, alice.id, second.id, first.id)
        feedback.correct(s, alice.id, first.id, "A copy kept elsewhere.")
        add_document(s, alice.id, conversation_id=conv.id, filename="notes.txt", mime="text/plain", size_bytes=5,
                     sha256="0" * 64, text="hello", chunks=[NewChunk(0, "hello", 0, 5, b"\x00" * 16)])
        s.add(Attachment(user_id=bob.id, mime="image/png", size_bytes=4, sha256="1" * 64, width=1, height=1,
                         data=b"\x89PNG"))
        import_ref(s, str(tiny_src), "tiny")
        import_ref(s, str(tiny_src), "tiny")
        releases.promote(s, "tiny", "1")
    return {"secret": secret}


def rows(db: Database) -> dict[str, list[dict]]:
    """Every column of every counted table, in primary-key order (model paths left out)."""
    out = {}
    with db.engine.connect() as conn:
        for name, model in COUNTED.items():
            table = model.__table__
            result = conn.execute(select(table).order_by(*table.primary_key.columns))
            out[name] = [{k: v for k, v in row._mapping.items() if not (name == "model_versions" and k == "path")}
                         for row in result]
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def kind(request):
    return request.param


@pytest.fixture()
def homes(kind, tmp_path, monkeypatch):
    """Two fresh homes, each with its own fresh database of `kind`; `use(i)` points CHATLOOP_HOME at one."""
    made, drops = [], []
    for i in range(2):
        home = tmp_path / f"home{i}"
        url, drop = database_url(kind, home)
        made.append((home, url))
        if drop:
            drops.append(drop)

    def use(i: int) -> tuple[Path, str]:
        monkeypatch.setenv("CHATLOOP_HOME", str(made[i][0]))
        return made[i]

    yield use
    for drop in drops:
        drop()


def test_restore_into_a_fresh_home_brings_back_every_row_and_model_version(homes, tiny_src, tmp_path):
    _, url_a = homes(0)
    db = Database(url_a)
    secret = fill(db, tiny_src)["secret"]
    before = rows(db)
    db.dispose()
    report = backup(tmp_path / "chatloop.tar", url_a)
    assert report["versions"] == ["tiny:1", "tiny:2"] and report["counts"]["messages"] == 3

    home_b, url_b = homes(1)
    restored = restore(tmp_path / "chatloop.tar", url_b)
    assert restored["counts"] == report["counts"]
    db = Database(url_b)
    try:
        assert rows(db) == before
        with db.session() as s:
            assert s.scalar(select(ApiKey).where(ApiKey.key_hash == accounts.sha256(secret))) is not None
            assert accounts.check_credentials(s, "bob@example.com", "long enough too").email == "bob@example.com"
            for v in s.scalars(select(ModelVersion)):
                assert Path(v.path) == home_b.resolve() / "models" / "tiny" / v.version
                assert verify_manifest(Path(v.path))["version"] == v.version
                assert sha256_file(Path(v.path) / "model.safetensors") == sha256_file(tiny_src / "model.safetensors")
    finally:
        db.dispose()


def _archive(tmp_path: Path, url: str, tiny_src: Path, name: str = "chatloop.tar") -> Path:
    db = Database(url)
    fill(db, tiny_src)
    db.dispose()
    backup(tmp_path / name, url)
    return tmp_path / name


def _assert_untouched(home: Path, url: str) -> None:
    from chatloop.store.backup import is_empty

    assert is_empty(url)
    assert not (home / "models").exists() or not any((home / "models").iterdir())
    assert not list(home.glob(".restore-*"))  # the staging folder is gone too


@pytest.mark.parametrize("kind", ["sqlite"], indirect=True)
def test_a_modified_member_is_refused_by_name_before_anything_is_written(homes, tiny_src, tmp_path):
    _, url_a = homes(0)
    archive = _archive(tmp_path, url_a, tiny_src)
    with tarfile.open(archive) as tar:
        member = tar.getmember("models/tiny/2/model.safetensors")
    data = bytearray(archive.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0x01  # one bit of one weight
    archive.write_bytes(bytes(data))
    home_b, url_b = homes(1)
    with pytest.raises(UsageError, match="models/tiny/2/model.safetensors is damaged or was modified"):
        restore(archive, url_b)
    _assert_untouched(home_b, url_b)


@pytest.mark.parametrize("kind", ["sqlite"], indirect=True)
def test_a_truncated_archive_is_refused_naming_where_it_ends(homes, tiny_src, tmp_path):
    _, url_a = homes(0)
    archive = _archive(tmp_path, url_a, tiny_src, "chatloop.tar.gz")
    whole = archive.read_bytes()
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    home_b, url_b = homes(1)
    archive.write_bytes(whole[: len(whole) // 2])  # a copy cut short, as a full disk leaves it
    with pytest.raises(UsageError, match=r"is truncated or damaged at models/tiny/|is truncated: .* missing"):
        restore(archive, url_b)
    _assert_untouched(home_b, url_b)
    # cut exactly between two members: the listed files that never came are named
    plain = tmp_path / "plain.tar"
    with tarfile.open(fileobj=io.BytesIO(whole)) as src, tarfile.open(plain, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers()[:-1]:
            dst.addfile(member, src.extractfile(member))
    with pytest.raises(UsageError, match=f"is truncated: 1 listed files are missing, first {names[-1]}"):
        restore(plain, url_b)
    _assert_untouched(home_b, url_b)


@pytest.mark.parametrize("kind", ["sqlite"], indirect=True)
def test_a_model_that_fails_its_own_manifest_is_refused_naming_the_file(homes, tiny_src, tmp_path):
    """A forger who rewrote a weight file and the archive's list still meets the model's manifest."""
    _, url_a = homes(0)
    archive = _archive(tmp_path, url_a, tiny_src)
    forged = tmp_path / "forged.tar"
    with tarfile.open(archive) as src, tarfile.open(forged, "w", format=tarfile.PAX_FORMAT) as dst:
        manifest = json.loads(src.extractfile(ARCHIVE_MANIFEST).read())
        weights = bytearray(src.extractfile("models/tiny/1/model.safetensors").read())
        weights[-1] ^= 0xFF
        manifest["files"]["models/tiny/1/model.safetensors"]["sha256"] = hashlib.sha256(weights).hexdigest()
        for member in src.getmembers():
            if member.name == ARCHIVE_MANIFEST:
                body = json.dumps(manifest).encode()
            elif member.name == "models/tiny/1/model.safetensors":
                body = bytes(weights)
            else:
                body = src.extractfile(member).read()
            member.size = len(body)
            dst.addfile(member, io.BytesIO(body))
    home_b, url_b = homes(1)
    with pytest.raises(ModelRefError, match="sha256 mismatch for model.safetensors"):
        restore(forged, url_b)
    _assert_untouched(home_b, url_b)


@pytest.mark.parametrize("kind", ["sqlite"], indirect=True)
def test_a_foreign_tar_or_a_file_that_is_no_archive_is_refused(homes, tmp_path):
    home_b, url_b = homes(1)
    foreign = tmp_path / "foreign.tar"
    with tarfile.open(foreign, "w") as tar:
        tar.add(__file__, arcname="database/chatloop.db")
    with pytest.raises(UsageError, match="not a chatloop backup: it does not begin with chatloop-backup.json"):
        restore(foreign, url_b)
    (tmp_path / "junk.tar").write_bytes(os.urandom(4096))
    with pytest.raises(UsageError, match="not a chatloop backup"):
        restore(tmp_path / "junk.tar", url_b)
    _assert_untouched(home_b, url_b)


def test_a_home_that_holds_data_is_replaced_only_with_force(homes, tiny_src, tmp_path):
    _, url_a = homes(0)
    archive = _archive(tmp_path, url_a, tiny_src)
    home_b, url_b = homes(1)
    db = Database(url_b)
    with db.session() as s:
        accounts.create_user(s, "someone-else@example.com", "long enough")
    db.dispose()
    with pytest.raises(UsageError, match="target database is not empty.*--force"):
        restore(archive, url_b)
    report = restore(archive, url_b, force=True)
    assert report["counts"]["users"] == 2
    db = Database(url_b)
    try:
        with db.session() as s, pytest.raises(NotFoundError):
            accounts.user_by_email(s, "someone-else@example.com")
        assert set(inspect(db.engine).get_table_names()) >= {"users", "messages", "model_versions"}
    finally:
        db.dispose()
    # the models are there now too: a second restore without --force is refused, with it replaces them
    with pytest.raises(UsageError, match="not empty"):
        restore(archive, url_b)
    (home_b / "models" / "tiny" / "1" / "model.safetensors").write_bytes(b"damaged")
    restore(archive, url_b, force=True)
    assert verify_manifest(home_b / "models" / "tiny" / "1")["version"] == "1"


@pytest.mark.parametrize("kind", ["sqlite"], indirect=True)
def test_backup_refuses_to_overwrite_and_names_a_missing_version(homes, tiny_src, tmp_path):
    home_a, url_a = homes(0)
    archive = _archive(tmp_path, url_a, tiny_src)
    with pytest.raises(UsageError, match="already exists"):
        backup(archive, url_a)
    (home_a / "models" / "tiny" / "2" / "config.json").unlink()
    with pytest.raises(ModelRefError, match="missing config.json"):
        backup(tmp_path / "again.tar", url_a)
    assert not (tmp_path / "again.tar").exists()


@pytest.mark.parametrize("kind", ["sqlite"], indirect=True)
def test_the_commands_exit_2_with_one_line_for_a_bad_archive_or_an_existing_output(homes, tmp_path):
    import subprocess
    import sys

    home, url = homes(1)
    env = {**os.environ, "CHATLOOP_HOME": str(home)}
    (tmp_path / "junk.tar").write_bytes(b"not a tar file at all" * 100)
    for args in (["restore", str(tmp_path / "junk.tar"), "--db", url], ["backup", str(tmp_path / "junk.tar")]):
        proc = subprocess.run([sys.executable, "-m", "chatloop", *args], capture_output=True, text=True, env=env,
                              timeout=120, check=False)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
