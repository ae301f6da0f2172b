"""`chatloop bench decode`: our engine against transformers `generate`, measured in one run.

    chatloop bench decode --json

Reports (tokens/s are generated tokens over wall time, prefill included):
- transformers_tok_s: `model.generate` float32 greedy, one stream (the baseline);
- single_tok_s, ttft_ms: our engine (`--dtype`, default auto), one stream at a time;
- aggregate_tok_s {"1","4","8"}: k streams submitted together, total tokens / wall time;
- llama_cpp_tok_s: the same GGUF in llama.cpp, when `llama_cpp` is importable (else null): the same
  three prompts and tokens per stream as single_tok_s, in a process of its own (bench/llama_cpp.py);
- rounds: how many times each of our measurements and llama.cpp's ran; each reports its fastest
  round. Ours run interleaved (one stream, then 1, 4 and 8 streams, then again), so a ratio is not
  one measurement's luck against another's: on a small VM whose neighbours take a core or memory
  bandwidth for seconds at a time, one round's figures wandered by 10-30%;
- chosen_kernels: the engine's kernel plan (engine/kernels.py: measured on this machine for auto);
- kv_cache: the key/value cache's dtype (int8 or float16 where our CPU attention runs: CHATLOOP_KV_CACHE);
- roofline_fraction: bytes of weights one single-stream step reads x decode tok/s / the measured
  memory copy bandwidth (1.0 would be a decoder bound only by reading its weights);
- machine: the CPU and the instruction sets that decide which kernels win;
- startup: a fresh `chatloop generate` process with the model cache warm, launch to first token;
- ratios: single vs transformers (and vs llama.cpp), 8 streams vs 1.
Both baselines run on the engine's own thread (see engine/scheduler.py on thread pools).
"""

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from chatloop.engine.sampling import SamplingParams
from chatloop.engine.scheduler import Engine
from chatloop.models.chat_format import render_prompt

PROMPTS = [
    "Explain why the sky is blue in a short paragraph.",
    "Write a story about a robot who learns to paint.",
    "List five tips for learning a new language, with one sentence each.",
    "What are the main differences between a cat and a dog as pets?",
    "Describe the water cycle to a ten year old.",
    "Give me a recipe for a simple vegetable soup.",
    "Why do we have seasons on Earth?",
    "Summarise the plot of a heist movie you invent.",
]


def _transformers_tok_s(engine, prompt_ids: list[int], tokens: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    def run() -> float:
        model = AutoModelForCausalLM.from_pretrained(engine.loaded.path, dtype=torch.float32).eval()
        ids = torch.tensor([prompt_ids])
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=4, do_sample=False)  # warm-up
            t = time.perf_counter()
            out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
            elapsed = time.perf_counter() - t
        return (out.shape[1] - ids.shape[1]) / elapsed

    return engine.run_on_engine_thread(run)


def source_gguf(src) -> str | None:
    """The GGUF file llama.cpp can run with the same weights as the resolved model `src`: a .gguf REF
    itself, or the bundled file the default's registered versions were converted from; None otherwise
    (a pulled model keeps only its converted weights, a fine-tuned one has other weights)."""
    if src.kind == "gguf":
        return str(src.path)
    try:
        manifest = json.loads((src.path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if str(manifest.get("source", "")).startswith("bundled:"):
        from chatloop.models.refs import bundled_gguf

        return str(bundled_gguf())
    return None


def _llama_cpp_tok_s(gguf: str | None, prompts: list[str], tokens: int, rounds: int) -> float | None:
    if gguf is None or importlib.util.find_spec("llama_cpp") is None:
        return None
    from chatloop.bench import llama_cpp

    return llama_cpp.tok_s(gguf, tokens, prompts, rounds)


def copy_bandwidth(device: str = "cpu") -> float:
    """Bytes per second a large tensor copy moves (read + write, STREAM's convention), best of 5."""
    import torch

    src = torch.ones(64 << 20, dtype=torch.float32, device=device)  # 256 MiB: far beyond any cache
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if src.is_cuda else (lambda: None)
    best = float("inf")
    for _ in range(5):
        sync()
        t = time.perf_counter()
        dst.copy_(src)
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * src.numel() * src.element_size() / best


def machine() -> dict:
    from chatloop.hardware import cpu_flags, cpu_model, native_bf16

    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "asimd", "sve") if f in flags]
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "isa": isa, "native_bf16": native_bf16(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
            "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY")}


def _concurrent(engine, prompts: list[list[int]], k: int, tokens: int) -> float:
    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    t = time.perf_counter()
    handles = [engine.submit(prompts[i % len(prompts)], params) for i in range(k)]
    results = [h.wait() for h in handles]
    return sum(r.completion_tokens for r in results) / (time.perf_counter() - t)


def _startup(model: str) -> dict:
    """A fresh CLI process (model cache already warm): launch to first token, with its breakdown."""
    cmd = [sys.executable, "-m", "chatloop", "generate", "--model", model, "--prompt", "Hi!",
           "--max-tokens", "4", "--temperature", "0", "--json"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    report = json.loads(proc.stdout)
    return {"process_wall_ms": round(wall * 1000, 1), **report["startup_ms"]}


def run_decode_bench(model: str = "default", tokens: int = 128, startup: bool = True, dtype: str = "auto",
                     device: str | None = None, rounds: int = 3) -> dict:
    from chatloop.registry.resolve import resolve_ref

    src = resolve_ref(model)  # a registered name too (`chatloop models pull NAME`), as every command takes
    # cold prefills: decoding is measured here
    engine = Engine.start(src, dtype, max_batch=8, prefix_cache_mb=0, device=device)
    try:
        prompts = [render_prompt(engine.tokenizer, [{"role": "user", "content": p}]).ids for p in PROMPTS]
        greedy = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
        engine.generate(prompts[0], SamplingParams(max_tokens=8, temperature=0))  # warm-up
        transformers_tok_s = _transformers_tok_s(engine, prompts[0], tokens)
        single_tok_s, singles, aggregate = 0.0, [], {str(k): 0.0 for k in (1, 4, 8)}
        for _ in range(rounds):
            run = [engine.generate(p, greedy) for p in prompts[:3]]
            tok_s = sum(r.completion_tokens for r in run) / sum(r.latency_s for r in run)
            if tok_s > single_tok_s:
                single_tok_s, singles = tok_s, run
            for k, best in aggregate.items():
                aggregate[k] = max(best, _concurrent(engine, prompts, int(k), tokens))
        llama_cpp = _llama_cpp_tok_s(source_gguf(src), PROMPTS[:3], tokens, rounds)
        single_decode = statistics.median(r.decode_tok_s for r in singles)
        bandwidth = engine.run_on_engine_thread(lambda: copy_bandwidth(engine.device))
        step_bytes = engine.runner.weight_bytes(1)
        report = {
            "model": engine.model_id,
            "dtype": engine.loaded.dtype,
            "device": engine.device,
            "tokens_per_stream": tokens,
            "rounds": rounds,
            "transformers_tok_s": round(transformers_tok_s, 2),
            "single_tok_s": round(single_tok_s, 2),
            "single_decode_tok_s": round(single_decode, 2),
            "ttft_ms": round(statistics.median(r.ttft_s for r in singles) * 1000, 1),
            "aggregate_tok_s": {k: round(v, 2) for k, v in aggregate.items()},
            "llama_cpp_tok_s": None if llama_cpp is None else round(llama_cpp, 2),
            "chosen_kernels": {"plan": engine.plan.describe(), **engine.plan.to_json(),
                               "choice": engine.kernel_choice},
            "kv_cache": engine.runner.kv_cache,
            "roofline_fraction": round(step_bytes * single_decode / bandwidth, 3),
            "weight_bytes_per_token": step_bytes,
            "copy_bandwidth_gb_s": round(bandwidth / 1e9, 2),
            "machine": machine(),
            "ratios": {
                "single_vs_transformers": round(single_tok_s / transformers_tok_s, 2),
                "aggregate_8_vs_single": round(aggregate["8"] / single_tok_s, 2),
                "aggregate_8_vs_1": round(aggregate["8"] / aggregate["1"], 2),
            },
        }
        if llama_cpp is not None:
            report["ratios"]["single_vs_llama_cpp"] = round(single_tok_s / llama_cpp, 2)
    finally:
        engine.shutdown()
    if startup:
        report["startup"] = _startup(model)
    return report


def print_report(report: dict) -> None:
    table = Table(title=f"decode benchmark · {report['model']} ({report['dtype']})")
    table.add_column("measurement")
    table.add_column("value", justify="right")
    table.add_row("transformers generate (float32, 1 stream)", f"{report['transformers_tok_s']} tok/s")
    if report["llama_cpp_tok_s"] is not None:
        table.add_row("llama.cpp (same GGUF, 1 stream)", f"{report['llama_cpp_tok_s']} tok/s")
    table.add_row("chatloop engine, 1 stream", f"{report['single_tok_s']} tok/s")
    table.add_row("chatloop engine, time to first token", f"{report['ttft_ms']} ms")
    table.add_row("kernels", report["chosen_kernels"]["plan"])
    table.add_row("key/value cache", report["kv_cache"])
    table.add_row("roofline fraction (weights read x tok/s / copy bandwidth)",
                  f"{report['roofline_fraction']} ({report['weight_bytes_per_token'] / 1e6:.0f} MB/token, "
                  f"{report['copy_bandwidth_gb_s']} GB/s)")
    m = report["machine"]
    table.add_row("machine", f"{m['cpu']}, {m['cores']} cores, {' '.join(m['isa'])}")
    for k, v in report["aggregate_tok_s"].items():
        table.add_row(f"chatloop engine, {k} concurrent streams", f"{v} tok/s")
    for k, v in report["ratios"].items():
        table.add_row(f"ratio {k}", f"{v}x")
    for k, v in report.get("startup", {}).items():
        table.add_row(f"startup {k}", f"{v} ms" if isinstance(v, (int, float)) else str(v))
    Console().print(table)
