"""FLOP accounting for training: a matmul peak measured on this machine, and FLOPs per token.

The peak is what a large float32 matmul achieves here with the current torch thread count; model
FLOP utilisation (MFU) is achieved training FLOP/s divided by it. FLOPs per trained token follow the
usual estimate: 6 x (parameters that take part in a matmul, lm_head included, embedding lookup
excluded) + 12 x layers x hidden x sequence length for attention scores and values.
"""

import time


def measure_matmul_peak(n: int = 1024, seconds: float = 0.6, windows: int = 3) -> float:
    """Best sustained float32 matmul FLOP/s over a few short windows."""
    import torch

    a = torch.randn(n, n)
    b = torch.randn(n, n)
    for _ in range(3):
        torch.mm(a, b)
    flops_per_mm = 2.0 * n**3
    best = 0.0
    for _ in range(windows):
        reps = 0
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds / windows or reps < 2:
            torch.mm(a, b)
            reps += 1
        best = max(best, reps * flops_per_mm / elapsed)
    return best


def matmul_params(model) -> int:
    """Parameters used in matmuls: all 2-D weights except the input embedding (a lookup), plus the
    lm_head (counted even when it is tied to the embedding, since it is a full matmul)."""
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters() if p.dim() >= 2 and p is not embed)
    if head is embed:
        total += head.numel()
    return total


def flops_per_token(model, seq_len: int) -> float:
    cfg = model.config
    return 6.0 * matmul_params(model) + 12.0 * cfg.num_hidden_layers * cfg.hidden_size * seq_len
