"""Helpers every stage shares: data file expansion, tokenizer/model loading, torch setup, progress."""

import glob
import os
import random
from pathlib import Path

from chatloop.errors import UsageError
from chatloop.train.config import StageConfig


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
    """A model or tokenizer REF from a config as a local directory, through the one resolver
    (models/refs.py: default, runs:NAME, hf:..., a path). A tokenizer run's output holds no model,
    so `runs:` names its directory as it is."""
    from chatloop.models.loading import model_directory
    from chatloop.models.refs import run_output

    return run_output(ref[len("runs:"):]) if ref.startswith("runs:") else model_directory(ref)


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


def load_pretrained(ref: str, auto_class, **kwargs):
    """(model, tokenizer, id) for a model reference: manifest verified, float32 on CPU. The id is the
    manifest's `name:version`, else the directory. `kwargs` go to `auto_class.from_pretrained`."""
    import torch

    from chatloop.models.manifest import manifest_id, verify_manifest

    path = model_dir(ref)
    manifest = verify_manifest(path)
    try:
        model = auto_class.from_pretrained(path, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load a model from {path}: {e}") from e
    tokenizer = load_tokenizer(str(path))
    return model, tokenizer, manifest_id(manifest) if manifest else str(path)


def setup_torch(cfg: StageConfig) -> None:
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
