"""`chatloop bench train`: pretraining throughput of a ~10M-parameter Llama on this CPU.

    chatloop bench train --json

Runs the pretrain stage's own model builder, optimizer and `train_step` on random tokens and reports
tokens/s, achieved FLOP/s (flops.py's 6N + attention estimate) and that as a fraction of the float32
matmul peak measured at start in the same process (MFU). The target on this box is >= 40%.
"""

import time

from rich.console import Console
from rich.table import Table


def run_train_bench(steps: int = 6, batch_size: int = 8, seq_len: int = 256) -> dict:
    import torch

    from chatloop.train.flops import flops_per_token, measure_matmul_peak
    from chatloop.train.pretrain import ModelShape, OptimConfig, PretrainConfig, build_model, build_optimizer, train_step

    class _Vocab:  # build_model needs only the size and special ids of a tokenizer
        bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

        def __len__(self) -> int:
            return 4096

    cfg = PretrainConfig(
        run_name="bench", tokenizer="-", data=["-"], seq_len=seq_len, batch_size=batch_size, max_steps=steps + 2,
        model=ModelShape(hidden_size=256, num_layers=10, num_heads=8, num_kv_heads=8, intermediate_size=768),
        optim=OptimConfig(warmup_steps=1),
    )
    torch.manual_seed(0)
    model = build_model(cfg, _Vocab())
    model.train()
    opt, sched = build_optimizer(model, cfg.optim, cfg.max_steps)
    peak = measure_matmul_peak()
    batches = [torch.randint(0, 4096, (batch_size, seq_len)) for _ in range(steps + 2)]
    for x in batches[:2]:  # warm-up: allocator, optimizer state, kernels
        train_step(model, opt, sched, [x], 1.0)
    t0 = time.perf_counter()
    for x in batches[2:]:
        train_step(model, opt, sched, [x], 1.0)
    elapsed = time.perf_counter() - t0
    tokens = steps * batch_size * seq_len
    achieved = flops_per_token(model, seq_len) * tokens / elapsed
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "seq_len": seq_len,
        "tokens_per_s": round(tokens / elapsed, 1),
        "achieved_flops_per_s": round(achieved, 1),
        "matmul_peak_flops_per_s": round(peak, 1),
        "mfu": round(achieved / peak, 4),
    }


def print_report(report: dict) -> None:
    table = Table(title="pretraining throughput (float32, CPU)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in report.items():
        table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
    Console().print(table)
