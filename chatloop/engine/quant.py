"""Weight formats for the runner's linear layers, and the plan that says which one serves which case.

Formats (each `y = x @ W.T + b`):
- float32: plain `F.linear`, the kernel transformers uses, so outputs match it exactly.
- float32-onednn: float32 weights pre-packed into oneDNN's blocked layout; same precision, different
  rounding order (not exact), often faster for batches.
- bfloat16: bf16 weights pre-packed for oneDNN (`mkldnn._reorder_linear_weight`, what inductor does
  when freezing a CPU model); fast only where the CPU multiplies bf16 natively (AVX-512 BF16, AMX).
- int8: symmetric per-output-channel weights, torch's CPU kernel `_weight_int8pack_mm` (gpt-fast's):
  1 byte per weight, fast for one row, slower for batches (it does not reuse weights across rows).
- int4: asymmetric group-wise (32 weights share a scale and a zero point) in torch's CPU int4 pack
  (`_weight_int4pack_mm_for_cpu`): half a byte per weight. The default model ships as a 4-bit GGUF
  (Q4_1, blocks of 32), which this grid represents almost exactly.

Activations are float32 or bfloat16 for the whole model (the KV cache shares them), so a plan has one
`act` dtype; dense weights must match it, int8 and int4 take either. Which format serves a call
depends on its number of rows (1 for single-stream decoding, the batch size for batched decoding,
many for prefill): `KernelPlan.body` and `.head` (the output projection) are lists of
`(max_rows, format)`. `--dtype` forces a uniform plan; `auto` measures (engine/kernels.py).
"""

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from chatloop.engine import lowbit
from chatloop.hardware import native_bf16

FORMATS = ("float32", "float32-onednn", "bfloat16", "int8", "int4", "int8-avx2", "int4-avx2", "int8-avx2-a8",
           "int4-avx2-a8")
# our kernels (lowbit.py): float32 activations, where they could be built (int8-avx2-a8: with VNNI)
LOWBIT = ("int8-avx2", "int4-avx2", "int8-avx2-a8", "int4-avx2-a8")
# formats that round the activations to 8 bits (the others' products are as good as float32's): the
# measured choice does not use them for one row, which reads weights and so gains nothing from it
ROUNDED_ACTIVATIONS = ("int8-avx2-a8", "int4-avx2-a8")
DENSE = {"float32": ("float32", "float32-onednn"), "bfloat16": ("bfloat16",)}
INT4_GROUP = 32
MANY = 1 << 30  # "any number of rows" in a plan
# A prefill's layers take the formats a plan has for this many rows whatever its number of tokens
# (the decoding batch sizes measured end below it: these are the formats measured for prefills),
# and its output projection one row's. A prompt then gives the same keys, values and first token
# whether the prefix cache held part of it (a continuation of 2-8 tokens had taken the decoding
# batches' rounded activations, and one of 1 token 4-bit weights) or how many prompts were packed.
PREFILL_ROWS = 9


def onednn() -> bool:
    return torch.backends.mkldnn.is_available()


def onednn_bf16() -> bool:
    """oneDNN has bf16 kernels for this CPU (AVX-512 at least; not necessarily native bf16 arithmetic)."""
    return onednn() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def formats_for(act: str) -> tuple[str, ...]:
    """The weight formats that run with activations of dtype `act`."""
    dense = DENSE[act] if onednn() else DENSE[act][:1]
    ours = lowbit.formats() if act == "float32" else ()
    return (*dense, "int8", "int4", *ours)


@dataclass(frozen=True)
class KernelPlan:
    act: str  # activation (and KV cache) dtype: float32 or bfloat16
    body: tuple[tuple[int, str], ...]  # (max rows, format) for the transformer layers, rows ascending
    head: tuple[tuple[int, str], ...]  # the same for the output projection

    @classmethod
    def uniform(cls, fmt: str, act: str | None = None, head: str | None = None) -> "KernelPlan":
        """One format everywhere (`--dtype`). int8/int4 compute in bf16 where the CPU has it natively,
        else float32; their output projection stays dense (shared with the embeddings, and the most
        quantisation-sensitive matrix) unless `head` says otherwise."""
        if act is None:
            act = "float32" if fmt.startswith("float32") or fmt in LOWBIT else "bfloat16" if fmt == "bfloat16" else (
                "bfloat16" if native_bf16() else "float32")
        dense = DENSE[act][0]
        return cls(act, ((MANY, fmt),), ((MANY, head or (fmt if fmt in DENSE[act] else dense)),))

    def formats(self) -> set[str]:
        return {f for _, f in self.body} | {f for _, f in self.head}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "KernelPlan":
        plan = cls(data["act"], tuple(map(tuple, data["body"])), tuple(map(tuple, data["head"])))
        for _, fmt in plan.body + plan.head:
            if fmt not in formats_for(plan.act):
                raise ValueError(f"format {fmt!r} cannot run with {plan.act} activations")
        return plan

    def describe(self) -> str:
        def part(table):
            return ", ".join(f"{'rows>%d' % lo if hi == MANY else 'rows<=%d' % hi}: {f}"
                             for lo, (hi, f) in zip([0] + [h for h, _ in table], table))
        return f"activations {self.act}; layers {part(self.body)}; output {part(self.head)}"


def pick(table: tuple[tuple[int, str], ...], rows: int) -> str:
    for max_rows, fmt in table:
        if rows <= max_rows:
            return fmt
    return table[-1][1]


class _Weights:
    """One weight matrix in one format, and its matmul."""

    def __init__(self, weight: torch.Tensor, fmt: str, act: torch.dtype, device: torch.device):
        w = weight.detach().float()
        self.fmt = fmt
        self.packed = False
        if device.type != "cpu":
            # On a GPU, plain F.linear is the fast kernel (cuBLAS); the packings below are CPU kernels.
            if fmt not in ("float32", "bfloat16"):
                raise ValueError(f"{fmt} weights run on the CPU only; on {device.type} use bfloat16 or float32")
            self.w = w.to(device=device, dtype=act).contiguous()
        elif fmt == "float32":
            self.w = w.contiguous()
        elif fmt == "float32-onednn" or (fmt == "bfloat16" and onednn_bf16()):
            self.w = torch.ops.mkldnn._reorder_linear_weight(w.to(act).contiguous())
            self.packed = True
            self.dense_bytes = w.numel() * (4 if act == torch.float32 else 2)
        elif fmt == "bfloat16":  # no oneDNN bf16 kernels here: plain bf16 matmuls
            self.w = w.to(act).contiguous()
        elif fmt == "int8":
            scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
            self.q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
            self.scales = scales.to(act)
        elif fmt in LOWBIT:
            if act != torch.float32:
                raise ValueError(f"{fmt} takes float32 activations")
            if not lowbit.available():
                raise ValueError(f"{fmt} is not available here: {lowbit.unavailable_reason()}")
            self.q, self.scales = lowbit.PACK[lowbit.layout(fmt)](w)
        elif fmt == "int4":
            out, k = w.shape
            if k % INT4_GROUP:
                raise ValueError(f"int4 needs an input size divisible by {INT4_GROUP}, got {k}")
            groups = w.view(out, k // INT4_GROUP, INT4_GROUP)
            lo, hi = groups.amin(-1), groups.amax(-1)
            scale = ((hi - lo) / 15).clamp(min=1e-8)
            q = torch.round((groups - lo[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
            self.q = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.view(out, k).contiguous(), 8)
            # torch's grid: w = (q - 8) * scale + zero, per group; [k/group, out, 2]
            zero = lo + 8 * scale
            self.scales = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(act)
        else:
            raise ValueError(f"unknown weight format {fmt!r}")

    def nbytes(self) -> int:
        """Bytes read from memory for one product: the weights (and their scales)."""
        return sum(t.numel() * t.element_size() for t in (getattr(self, n, None) for n in ("w", "q", "scales"))
                   if isinstance(t, torch.Tensor) and not t.is_mkldnn) + (
            self.dense_bytes if self.packed else 0)

    def matmul(self, flat: torch.Tensor) -> torch.Tensor:
        fmt = self.fmt
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(flat, self.w, None, "none", [], "")
        if fmt in ("float32", "bfloat16"):
            return F.linear(flat, self.w)
        if fmt == "int8":
            return torch.ops.aten._weight_int8pack_mm(flat, self.q, self.scales)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.q, INT4_GROUP, self.scales)


class PackedLinear:
    """`y = x @ W.T + b`, in the format `table` picks for the call's number of rows; callable like nn.Linear."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, table, act: str, device="cpu",
                 norm: torch.Tensor | None = None, eps: float = 0.0):
        """norm, eps: the RMS norm in front of this projection (its weight), if any: the call then takes
        the un-normalised input; our low-bit kernels normalise as they quantise it, the others run
        `norm_fn` first."""
        self.act = torch.float32 if act == "float32" else torch.bfloat16
        device = torch.device(device)
        self.out_features = weight.shape[0]
        self.table = tuple(table)
        self.norm = None if norm is None else norm.detach().to(device=device, dtype=self.act)
        self.eps = eps
        # formats that differ only in how they take the activations share one packed copy of the weights
        packed: dict[str, _Weights] = {}
        self.kernels: dict[str, _Weights] = {}
        for fmt in {f for _, f in self.table}:
            if fmt in LOWBIT and lowbit.available() and fmt not in lowbit.formats():
                raise ValueError(f"{fmt} is not available here: its kernel needs AVX-512 VNNI")
            layout = lowbit.layout(fmt)
            if layout not in packed:
                packed[layout] = _Weights(weight, layout, self.act, device)
            self.kernels[fmt] = packed[layout]
        self.only = self.table[0][1] if len(self.kernels) == 1 else None  # the one format, if so
        self.bias = None if bias is None else bias.detach().to(device=device, dtype=self.act).contiguous()

    def nbytes(self, rows: int) -> int:
        """Bytes of weights a product with `rows` rows reads."""
        return self.kernels[pick(self.table, rows)].nbytes()

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None, norm_fn=None,
                 glu: bool = False, as_rows: int | None = None) -> torch.Tensor:
        """`residual + norm(x) @ W.T + b` (no norm unless built with one; norm_fn(x, weight) is the norm
        for kernels that do not apply it themselves: the runner's exact or fused RMS norm). glu: x
        holds gate and up side by side and the input is silu(gate) * up (a gated MLP's down
        projection). as_rows: take the format for that many rows, not the call's (PREFILL_ROWS)."""
        rows = x.numel() // x.shape[-1]
        fmt = self.only or pick(self.table, rows if as_rows is None else as_rows)
        kernel = self.kernels[fmt]
        if fmt in LOWBIT:  # one call: norm or gate, product, bias and residual
            flat = x.reshape(rows, x.shape[-1])
            res = None if residual is None else residual.reshape(rows, self.out_features)
            y = lowbit.PRODUCTS[fmt](
                flat, kernel.q, kernel.scales, self.bias, res, self.norm, self.eps, glu)
            return y if x.dim() == 2 else y.view(*x.shape[:-1], self.out_features)
        if glu:
            gate, up = x.chunk(2, dim=-1)
            x = F.silu(gate) * up
        if self.norm is not None:
            x = (norm_fn or _rms_norm(self.eps))(x, self.norm)
        if kernel.fmt == "float32":  # F.linear takes any leading shape (and adds the bias as transformers does)
            y = F.linear(x, kernel.w, self.bias)
        else:
            if x.dim() == 2:  # the runner's token-major activations: no reshaping
                y = kernel.matmul(x)
            else:
                y = kernel.matmul(x.reshape(rows, x.shape[-1])).view(*x.shape[:-1], self.out_features)
            y = y if self.bias is None else y + self.bias
        return y if residual is None else residual + y


def _rms_norm(eps: float):
    return lambda x, weight: F.rms_norm(x, weight.shape, weight, eps)


def fuse(linears: list, table, act: str, device="cpu", norm: torch.Tensor | None = None,
         eps: float = 0.0) -> PackedLinear:
    """One PackedLinear computing several projections of the same input (e.g. q, k and v)."""
    weight = torch.cat([lin.weight for lin in linears], dim=0)
    if all(lin.bias is None for lin in linears):
        bias = None
    else:
        bias = torch.cat([
            lin.bias if lin.bias is not None else torch.zeros(lin.weight.shape[0], dtype=weight.dtype)
            for lin in linears
        ])
    return PackedLinear(weight, bias, table, act, device, norm, eps)
