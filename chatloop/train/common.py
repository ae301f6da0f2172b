"""Helpers every stage shares: data file expansion, tokenizer/model loading, torch setup, progress."""

import glob
import os
import random
from pathlib import Path

from chatloop.errors import UsageError
from chatloop.train.config import StageConfig, resolve_ref


def expand_data(specs: list[str], run_dir: Path) -> list[Path]:
    """Data entries -> files. An entry is a path, a glob, or `synthetic:KIND:N[:LANG]`, which writes a
    generated dataset (chatloop.data.synthetic) into RUN_DIR/data/ once and uses that file."""
    files: list[Path] = []
    for spec in specs:
        if spec.startswith("synthetic:"):
            from chatloop.data.synthetic import materialize

            files.append(materialize(spec, run_dir / "data"))
            continue
        matches = sorted(glob.glob(os.path.expanduser(spec))) if any(c in spec for c in "*?[") else [spec]
        for m in matches:
            if not Path(m).is_file():
                raise UsageError(f"data file not found: {m}")
            files.append(Path(m))
        if not matches:
            raise UsageError(f"data pattern matched no files: {spec}")
    if not files:
        raise UsageError("the config lists no data")
    return files


def model_dir(ref: str) -> Path:
    """A model/tokenizer reference from a config -> a local directory (`default`, `runs:NAME`, a path)."""
    value = resolve_ref(ref)
    if value == "default":
        from chatloop.models.loading import convert_gguf
        from chatloop.models.refs import resolve

        return convert_gguf(resolve("default"))
    path = Path(value).expanduser()
    if not path.is_dir():
        hint = " (has that run finished?)" if ref.startswith("runs:") else ""
        raise UsageError(f"model or tokenizer directory not found: {path}{hint}")
    return path


def load_tokenizer(ref: str):
    from transformers import AutoTokenizer

    path = model_dir(ref)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load a tokenizer from {path}: {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def setup_torch(cfg: StageConfig) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)


def distributed() -> tuple[int, int]:
    """(rank, world size): under torchrun / accelerate launch (WORLD_SIZE > 1) joins a gloo group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), world


def progress(total: int, initial: int, desc: str, enabled: bool = True):
    """A tqdm bar on stderr (ETA built in); hidden when stderr is not a terminal or not `enabled`."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                disable=None if enabled else True)
