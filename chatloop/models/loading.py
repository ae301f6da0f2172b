"""Load a model reference into a PyTorch model + tokenizer ready for the engine.

GGUF files (the bundled default included) are dequantised once by transformers (`gguf_file=`,
~20 s) and cached as safetensors + tokenizer + manifest under CHATLOOP_HOME/models/NAME/gguf-SHA/,
so later starts only read safetensors. Every directory with a manifest is verified on load.
"""

import json
import logging
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatloop.config import get_settings
from chatloop.errors import ModelRefError, UsageError
from chatloop.fsutil import publish_dir, staging_dir
from chatloop.models.manifest import verify_manifest, write_manifest
from chatloop.models.refs import ResolvedRef, gguf_digest, resolve
from chatloop.models.vision import parts_template

log = logging.getLogger(__name__)

# Decoder-only architectures whose layers the engine's runner drives directly (engine/runner.py).
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2")
# Vision-language architectures (docs/vision.md): a vision encoder + connector before a text model
# of a supported architecture; the engine runs the text model and splices in the image features.
VISION_ARCHITECTURES = ("idefics3",)  # SmolVLM
# Text models these take positions the runner does not compute (Qwen2-VL's multimodal rotary
# embedding numbers an image's tokens by row and column, not one by one).
UNSUPPORTED_VISION = {"qwen2_vl": "Qwen2-VL", "qwen2_5_vl": "Qwen2.5-VL"}
DTYPES = ("auto", "float32", "bfloat16", "int8", "int4", "int8-avx2", "int4-avx2", "int8-avx2-a8", "int4-avx2-a8")
# (`--dtype` of every command: engine/quant.py's formats, one for every case, or `auto`'s measured plan)


@dataclass
class LoadedModel:
    model: Any  # a transformers *ForCausalLM (or a vision-language *ForConditionalGeneration) in eval mode
    tokenizer: Any
    model_id: str  # "name:version": the exact version that answers
    path: Path
    dtype: str  # the engine's weight mode: auto, float32, bfloat16 or int8
    context_len: int
    eos_token_ids: tuple[int, ...]
    timings: dict[str, float] = field(default_factory=dict)
    processor: Any = None  # a vision-language model's processor (models/vision.py); None for text models


def convert_gguf(src: ResolvedRef) -> Path:
    """Dequantise a GGUF file into a cached safetensors directory (once); returns the directory,
    CHATLOOP_HOME/models/NAME/gguf-SHA12 (the version `resolve` named)."""
    final = get_settings().models_dir / src.name / src.version
    if not final.is_dir():
        gguf_to_dir(src.path, final, name=src.name, version=final.name)
    return final


def gguf_to_dir(gguf: Path, final: Path, *, name: str, version: str, **lineage) -> Path:
    """Write `gguf` as a Hugging Face model directory (float32 safetensors, tokenizer, manifest
    naming NAME:VERSION plus `lineage`) at `final`, atomically: staged beside it, then renamed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("converting %s into %s (once)", gguf, final)
    kwargs = {"gguf_file": gguf.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    except (ValueError, KeyError, OSError, RuntimeError, struct.error) as e:  # struct: a file cut short
        raise ModelRefError(f"cannot load GGUF file {gguf}: {e}") from e
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # save_pretrained refuses a model loaded from GGUF: copy its weights into a fresh model.
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(quantized.state_dict(), assign=True)
    fresh.tie_weights()
    tmp = staging_dir(final)
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_manifest(tmp, name=name, version=version,
                       source={"gguf": str(gguf), "sha256": gguf_digest(gguf)}, **lineage)
        publish_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def model_directory(ref: str) -> Path:
    """A REF as a local Hugging Face model directory (a GGUF is converted once), for the stages
    and tools that load it with transformers themselves."""
    src = resolve(ref)
    return convert_gguf(src) if src.kind == "gguf" else src.path


def _check_architecture(directory: Path) -> dict:
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelRefError(f"unreadable config.json in {directory}: {e}") from e
    model_type = config.get("model_type")
    if model_type in UNSUPPORTED_VISION:
        raise ModelRefError(
            f"{UNSUPPORTED_VISION[model_type]} ('{model_type}' in {directory}) is not supported yet: its "
            "multimodal rotary positions are not implemented in the engine; vision-language models that "
            f"run: {', '.join(VISION_ARCHITECTURES)} (SmolVLM)"
        )
    if model_type in VISION_ARCHITECTURES:
        text_type = (config.get("text_config") or {}).get("model_type", "llama")
        if text_type not in SUPPORTED_ARCHITECTURES:
            raise ModelRefError(f"unsupported text model '{text_type}' of the {model_type} model in {directory}")
        return config
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise ModelRefError(
            f"unsupported architecture '{model_type}' in {directory}: the engine runs "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} decoder models"
        )
    return config


def check_dtype(dtype: str) -> str:
    """`dtype` if it is one the engine knows, else a UsageError listing them.
    (auto = the formats measured fastest on this machine within the accuracy budget, engine/kernels.py;
    the perplexity tests bound each format against float32.)"""
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype '{dtype}': choose one of {', '.join(DTYPES)}")
    return dtype


def load_model(ref: str | ResolvedRef, dtype: str = "auto") -> LoadedModel:
    """Resolve (unless already resolved), verify and load a model; errors are ModelRefError (exit code 2)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    check_dtype(dtype)
    src = resolve(ref) if isinstance(ref, str) else ref
    directory = convert_gguf(src) if src.kind == "gguf" else src.path
    timings["resolve_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    config = _check_architecture(directory)
    verify_manifest(directory)
    timings["verify_s"] = time.perf_counter() - t

    t = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    timings["import_s"] = time.perf_counter() - t
    t = time.perf_counter()
    vision = config.get("model_type") in VISION_ARCHITECTURES
    processor = None
    try:
        # Load float32 weights; the engine's runner packs them into the compute dtype.
        torch_dtype = torch.float32
        if vision:
            processor = AutoProcessor.from_pretrained(directory)
            tokenizer = processor.tokenizer
            # Its template reads contents as lists of parts; text-only callers send strings.
            processor.chat_template = parts_template(processor.chat_template)
            tokenizer.chat_template = parts_template(tokenizer.chat_template or processor.chat_template)
            model = AutoModelForImageTextToText.from_pretrained(directory, dtype=torch_dtype)
        else:
            tokenizer = AutoTokenizer.from_pretrained(directory)
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch_dtype)
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        raise ModelRefError(f"cannot load model from {directory}: {e}") from e
    model.eval().requires_grad_(False)
    timings["load_s"] = time.perf_counter() - t

    eos = model.generation_config.eos_token_id if model.generation_config else None
    eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
    if tokenizer.eos_token_id is not None:
        eos_ids.add(tokenizer.eos_token_id)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=src.model_id,
        path=directory,
        dtype=dtype,
        context_len=int((config.get("text_config") or config).get("max_position_embeddings") or 2048),
        eos_token_ids=tuple(sorted(eos_ids)),
        timings=timings,
        processor=processor,
    )
