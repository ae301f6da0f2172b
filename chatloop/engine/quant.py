"""Packed linear weights for the runner: float32, bfloat16, or int8 weight-only.

- float32: plain `F.linear` (the same kernel transformers uses, so outputs match it exactly).
- bfloat16: weights pre-packed once into oneDNN's blocked layout (`mkldnn._reorder_linear_weight`,
  what inductor does when freezing a CPU model); on AVX-512-BF16 CPUs this is 2x faster than
  `F.linear` on bf16 and 3-7x faster than float32 at every batch size we run. Plain `F.linear`
  where oneDNN lacks bf16 support.
- int8: symmetric per-output-channel weights run by torch's CPU kernel `_weight_int8pack_mm`
  (the one gpt-fast uses) with bf16 activations: half of bf16's memory, fast for one row, slower
  for batches (the kernel does not reuse weights across rows).
- auto: both of the above; int8 for a single row (decoding is bound by weight traffic: 1 byte
  per weight beats 2) and packed bf16 for batches and prefill (compute reuse wins). Measured on
  the default model here: one stream 16 ms/token (int8) vs 20 ms (bf16); 8 streams 25 ms/step
  (bf16) vs 44 ms (int8).
"""

import torch
import torch.nn.functional as F

MODES = ("float32", "bfloat16", "int8", "auto")


def onednn_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


class PackedLinear:
    """`y = x @ W.T + b` with weights stored as `mode` dictates; callable like nn.Linear."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, mode: str):
        if mode not in MODES:
            raise ValueError(f"unknown weight mode {mode!r}")
        self.mode = mode
        self.out_features = weight.shape[0]
        compute = torch.float32 if mode == "float32" else torch.bfloat16
        self.bias = None if bias is None else bias.detach().to(compute).contiguous()
        self.qweight = self.scales = self.packed = self.weight = None
        if mode in ("int8", "auto"):
            w = weight.detach().float()
            scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
            self.qweight = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
            self.scales = scales.to(torch.bfloat16)
        if mode != "int8":
            self.weight = weight.detach().to(compute).contiguous()
            if mode != "float32" and onednn_bf16():
                self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight)
                self.weight = None  # the packed copy is all we need

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if self.qweight is not None and (self.mode == "int8" or rows == 1):
            flat = x.reshape(rows, x.shape[-1]).contiguous()
            y = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scales)
            y = y.view(*x.shape[:-1], self.out_features)
            return y if self.bias is None else y + self.bias
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def fuse(linears: list, mode: str) -> PackedLinear:
    """One PackedLinear computing several projections of the same input (e.g. q, k and v)."""
    weight = torch.cat([lin.weight for lin in linears], dim=0)
    if all(lin.bias is None for lin in linears):
        bias = None
    else:
        bias = torch.cat([
            lin.bias if lin.bias is not None else torch.zeros(lin.weight.shape[0], dtype=weight.dtype)
            for lin in linears
        ])
    return PackedLinear(weight, bias, mode)
