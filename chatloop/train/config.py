"""Stage configs: YAML files mapped onto typed pydantic models whose fields carry help text.

    cfg = load_config(PretrainConfig, Path("configs/tiny/pretrain.yaml"), ["optim.lr=1e-3"])

`--set key=value` overrides use dotted paths into the YAML tree; values are parsed as YAML scalars
(`true`, `3`, `[a, b]`). Unknown keys and wrong types are errors that name the file and field.
`describe(cls)` lists every field with its type, default and help (shown by `chatloop train --help-config`).

Paths inside configs are relative to the current directory. Model and tokenizer fields take a REF
(models/refs.py); `runs:NAME` is the `final/` output of run NAME under CHATLOOP_HOME/runs, which is
how the tiny presets chain tokenizer -> pretrain -> sft -> ...
"""

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chatloop.errors import UsageError

C = TypeVar("C", bound="StageConfig")


class StageConfig(BaseModel):
    """Fields every stage shares."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    run_name: str = Field(description="Run directory name under CHATLOOP_HOME/runs (unless --out is given).")
    seed: int = Field(default=0, description="Seeds model init, data order and sampling; same seed, same weights.")
    save_every: int = Field(default=50, ge=1, description="Write a checkpoint every N optimizer steps.")
    keep_checkpoints: int = Field(default=2, ge=1, description="How many newest checkpoints to keep.")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (default: torch's choice).")


def _set(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise UsageError(f"--set {dotted}: '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise UsageError(f"--set {item}: value is not valid YAML: {yaml_reason(e)}") from e
        _set(tree, key.strip(), value)
    return tree


def load_config(cls: type[C], path: Path, overrides: list[str] | None = None) -> C:
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise UsageError(f"cannot read config {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise UsageError(f"config {path} is not valid YAML: {yaml_reason(e)}") from e
    if not isinstance(tree, dict):
        raise UsageError(f"config {path} must be a YAML mapping of fields")
    apply_overrides(tree, overrides or [])
    try:
        return cls.model_validate(tree)
    except ValidationError as e:
        raise UsageError(f"config {path}: {validation_reason(e)}") from e


def yaml_reason(e: yaml.YAMLError) -> str:
    """One line for a YAML error (PyAML's own message quotes the text with a caret under it)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).strip().splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def validation_reason(e: ValidationError) -> str:
    """One line for a config's validation errors: the first, naming its field, and how many more."""
    first = e.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{f'field {field!r}: ' if field else ''}{message}{more}"


def dump_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def describe(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per field: `name (type, default): help`, nested models expanded."""
    lines = []
    for name, field in cls.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            lines.extend(describe(ann, f"{prefix}{name}."))
            continue
        default = "required" if field.is_required() else f"default {field.get_default(call_default_factory=True)!r}"
        type_name = getattr(ann, "__name__", str(ann).replace("typing.", ""))
        lines.append(f"{prefix}{name} ({type_name}, {default}): {field.description or ''}")
    return lines
