"""Our AVX2 kernels for 4- and 8-bit weights (lowbit.c), built on this machine at first use.

PyTorch's CPU kernels for quantised weights (`_weight_int4pack_mm_for_cpu`, `_weight_int8pack_mm`)
unpack the weights once per row of activations, and without AVX-512 they go through bfloat16
conversions: on an AVX2-only CPU a 4-bit decoding step of the default model ran at about a third of
the memory bandwidth, and 8 rows cost 3.5x one row. No maintained library has a kernel for this
case that PyTorch can call on AVX2 (torchao's dynamic int8 x int4 kernel needs AVX-512 VNNI), so
lowbit.c is ours, built much as llama.cpp's are: activations quantised in blocks of 32 (to int16,
so nothing is lost against float32), products on integer multiply-adds, a block of weights unpacked
once for up to eight rows, and the RMS norm in front of a projection and the residual add after it
done in the same call.

The C file is compiled with the system's C compiler (`$CC`, else `cc`) into
CHATLOOP_HOME/kernels/native/HASH/ (the hash covers the source, the compiler and the flags; the
library is written under a temporary name and renamed, so a half-built one is never loaded) and
called through ctypes with the tensors' pointers. Where there is no compiler, the CPU lacks AVX2,
FMA or F16C, or CHATLOOP_LOWBIT=0, the formats are simply not offered: the measured kernel choice
(kernels.py) then picks among PyTorch's own, and everything still runs.

Where the CPU has AVX-512 (F and BW) the same source is built with it too (CHATLOOP_LOWBIT_AVX512=0
keeps it at AVX2), and with VNNI where the CPU has that: a vector then holds a whole block of 16
output columns. The formats and their names stay the same; they name the layout, which is the same
on both. Where the CPU also has AMX (amx_tile, amx_int8: Intel Sapphire Rapids and later) and Linux
grants its tiles, products of at least AMX_MIN_ROWS rows (prefills) run on them, with the same
results bit for bit (CHATLOOP_LOWBIT_AMX=N sets the rows, 0 turns them off).

A whole decoding step can run in one call (decode_step: every layer's projections, rotary embedding,
cache writes and attention), which takes the Python glue between the projections out of every
token.

Formats, packed from float weights [N, K] (y = x @ W.T):
- int4-avx2: asymmetric, groups of 32 along K, w = q * scale + min with q in 0..15 and (scale, min)
  in float16 (the grid of GGUF's Q4_1, which the default model ships in): 0.625 bytes a weight,
  laid out in blocks of 16 output columns (pack_q4); the output size must divide by 16.
- int8-avx2: symmetric per output row, w = q * scale with q in -127..127: 1 byte a weight, in the
  same blocks of 16 output columns (pack_q8).
"""

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from chatloop.config import get_settings
from chatloop.hardware import cpu_flags

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("lowbit.c")
CFLAGS = ["-O3", "-ffp-contract=off", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-shared", "-fPIC"]
AVX512 = ("avx512f", "avx512bw")  # where the CPU has these, the products run on 512-bit registers
# and where it has these, a multiply-add and its sum are one instruction (CPU flag -> compiler flag)
VNNI = {"avx512_vnni": "-mavx512vnni", "avx_vnni": "-mavxvnni"}
AMX = ("amx_tile", "amx_int8")  # Intel's tile products (Sapphire Rapids and later)
AMX_FLAGS = ["-mamx-tile", "-mamx-int8"]
AMX_MIN_ROWS = 32  # products of at least this many rows use the tiles, where the build has them
# (CHATLOOP_LOWBIT_AMX; 0: never): prefills. At 16 rows they were as fast as the vectors, at 8 (a decoding
# batch) a third slower; at 32-128 rows 10-38% faster (a 2-core Xeon, Emerald Rapids)
GROUP = 32
NEEDS = ("avx2", "fma", "f16c")


def source_key() -> str:
    """A digest of the kernels' source: measurements of their speed hold for this source only."""
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")


def cflags() -> list[str]:
    """The compiler's flags for this CPU: AVX2, plus AVX-512 where it has that (unless
    CHATLOOP_LOWBIT_AVX512=0), plus VNNI for the width in use where it has that, plus AMX's tiles
    and int8 products where it has those (with AVX-512)."""
    flags = cpu_flags()
    if os.environ.get("CHATLOOP_LOWBIT_AVX512", "1") != "0" and all(f in flags for f in AVX512):
        return (CFLAGS + [f"-m{f}" for f in AVX512] + ([VNNI["avx512_vnni"]] if "avx512_vnni" in flags else [])
                + (AMX_FLAGS if all(f in flags for f in AMX) else []))
    return CFLAGS + ([VNNI["avx_vnni"]] if "avx_vnni" in flags else [])


def _build(out_dir: Path) -> Path:
    """The library for this CPU; where the compiler does not know its wider flags (an older one),
    the build without AMX, then the AVX2 build."""
    flags = cflags()
    candidates = [flags, [f for f in flags if f not in AMX_FLAGS], CFLAGS]
    attempts = [c for i, c in enumerate(candidates) if c not in candidates[:i]]
    for attempt, fallback in zip(attempts, attempts[1:]):
        try:
            return _build_with(out_dir, attempt)
        except RuntimeError:
            log.warning("building the low-bit kernels with %s failed; trying %s", " ".join(attempt),
                        " ".join(fallback))
    return _build_with(out_dir, attempts[-1])


def _build_with(out_dir: Path, flags: list[str]) -> Path:
    cc = _compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([source_key(), cc, version, *flags]).encode()).hexdigest()[:16]
    lib = out_dir / key / "liblowbit.so"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed: {proc.stderr.strip()[-2000:]}")
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str]:
    """(the loaded library, '') or (None, why it is not available)."""
    if os.environ.get("CHATLOOP_LOWBIT", "1") == "0":
        return None, "CHATLOOP_LOWBIT=0"
    missing = [f for f in NEEDS if f not in cpu_flags()]
    if missing:
        return None, f"the CPU lacks {', '.join(missing)}"
    if _compiler() is None:
        return None, "no C compiler (cc or gcc; or set CC)"
    try:
        path = _build(get_settings().kernels_dir / "native")
        lib = ctypes.CDLL(str(path))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        log.warning("low-bit AVX2 kernels unavailable: %s", e)
        return None, str(e)
    p, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for fn in (getattr(lib, name) for name in SYMBOLS.values() if hasattr(lib, name)):
        fn.argtypes = [p, p, p, p, p, p, p, i64, i64, i64, p, ctypes.c_float, c_int, c_int]
        fn.restype = None
    lib.chatloop_attention.argtypes = [p, i64, p, p, c_int, p, p, i64, p, i64, i64, i64, i64, i64, ctypes.c_float, p,
                                       i64, c_int]
    lib.chatloop_attention.restype = None
    lib.chatloop_attention_scratch.argtypes = [p, p, i64, i64, i64, i64, c_int]
    lib.chatloop_attention_scratch.restype = i64
    lib.chatloop_decode_scores.argtypes = [c_int, i64, i64, i64, i64]
    lib.chatloop_decode_scores.restype = i64
    lib.chatloop_rope_store.argtypes = [p, i64, p, p, p, p, i64, i64, i64, i64, p, p, c_int, c_int]
    lib.chatloop_rope_store.restype = None
    lib.chatloop_decode_step.argtypes = [p, i64, p, i64, i64, p, p, p, p, i64, i64, i64, i64, ctypes.c_float,
                                         ctypes.c_float, p, p, p, p, p, c_int]
    lib.chatloop_decode_step.restype = None
    if hasattr(lib, "chatloop_amx"):
        lib.chatloop_amx.argtypes = [c_int]
        lib.chatloop_amx.restype = c_int
        setting = os.environ.get("CHATLOOP_LOWBIT_AMX", "").strip()
        amx_rows = int(setting) if setting.isdigit() else AMX_MIN_ROWS
        if setting and not setting.isdigit():
            log.warning("CHATLOOP_LOWBIT_AMX=%r is not a number of rows (0 or more): using %d", setting, amx_rows)
        if lib.chatloop_amx(amx_rows) != amx_rows:
            log.warning("the CPU has AMX but the OS did not grant its tiles: the low-bit kernels run without")
    return lib, ""


def amx_rows(rows: int = -1) -> int:
    """The fewest rows a product takes AMX's tiles for (0: never, as where the build or the OS has
    none); with `rows` >= 0, set it first (tests compare the two paths)."""
    lib = _library()[0]
    return 0 if lib is None or not hasattr(lib, "chatloop_amx") else lib.chatloop_amx(rows)


def available() -> bool:
    return _library()[0] is not None


def formats() -> tuple[str, ...]:
    """Our formats this machine's build runs (none where it could not be built)."""
    lib = _library()[0]
    if lib is None:
        return ()
    return tuple(f for f, name in SYMBOLS.items() if hasattr(lib, name))


def unavailable_reason() -> str:
    return _library()[1]


BLOCK = 16  # output columns interleaved together in both layouts


def pack_q4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float [N, K] -> (nibbles uint8 [N, K/2], (scale, min) float16 [N, K/32, 2]), in lowbit.c's
    interleaved layout: per block of 16 output columns and group of 32 k, eight 32-byte chunks (chunk
    c: k-pair c in the low nibbles, k-pair c + 8 in the high ones; byte 2j + t is column j's k =
    32g + 2p + t), then the 16 columns' scales and their 16 mins."""
    n, k = w.shape
    if k % GROUP:
        raise ValueError(f"int4-avx2 needs an input size divisible by {GROUP}, got {k}")
    if n % BLOCK:
        raise ValueError(f"int4-avx2 needs an output size divisible by {BLOCK}, got {n}")
    g = k // GROUP
    groups = w.float().view(n, g, GROUP)
    lo, hi = groups.amin(-1), groups.amax(-1)
    # quantise against the float16 values the kernel will read back
    scale = ((hi - lo) / 15).clamp(min=1e-8).half().float()
    lo = lo.half().float()
    q = torch.round((groups - lo[..., None]) / scale[..., None]).clamp(0, 15).to(torch.uint8)
    # [blocks, 16 columns, groups, 16 pairs, 2] -> [blocks, groups, 16 pairs, 16 columns x 2]
    pairs = q.view(n // BLOCK, BLOCK, g, 16, 2).permute(0, 2, 3, 1, 4).reshape(n // BLOCK, g, 16, 2 * BLOCK)
    packed = pairs[:, :, :8] | (pairs[:, :, 8:] << 4)  # [blocks, groups, 8 chunks, 32 bytes]
    sm = torch.stack([scale, lo], -1).half().view(n // BLOCK, BLOCK, g, 2).permute(0, 2, 3, 1)
    return packed.reshape(n, k // 2).contiguous(), sm.reshape(n, g, 2).contiguous()


def unpack_q4(q: torch.Tensor, sm: torch.Tensor) -> torch.Tensor:
    """The float weights a q4 pack stands for (tests and accuracy checks)."""
    n, half = q.shape
    g = half // 16
    chunks = q.view(n // BLOCK, g, 8, 2 * BLOCK)
    pairs = torch.cat([chunks & 0x0F, chunks >> 4], 2)  # [blocks, groups, 16 pairs, 16 columns x 2]
    nibbles = pairs.view(n // BLOCK, g, 16, BLOCK, 2).permute(0, 3, 1, 2, 4).reshape(n, g, GROUP).float()
    scales = sm.view(n // BLOCK, g, 2, BLOCK).permute(0, 3, 1, 2).float()  # [blocks, 16, groups, 2]
    scales = scales.reshape(n, g, 2)
    return (nibbles * scales[..., 0:1] + scales[..., 1:2]).reshape(n, -1)


def pack_q8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float [N, K] -> (int8 [N, K], scale float32 [N]), the weights in lowbit.c's interleaved layout:
    per block of 16 output columns and group of 32 k, sixteen 32-byte chunks (chunk p: k-pair p, byte
    2j + t being column j's k = 32g + 2p + t)."""
    n, k = w.shape
    if k % GROUP:
        raise ValueError(f"int8-avx2 needs an input size divisible by {GROUP}, got {k}")
    if n % BLOCK:
        raise ValueError(f"int8-avx2 needs an output size divisible by {BLOCK}, got {n}")
    w = w.float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    q = q.view(n // BLOCK, BLOCK, k // GROUP, 16, 2).permute(0, 2, 3, 1, 4)  # [blocks, groups, pairs, 16, 2]
    return q.reshape(n, k).contiguous(), scale.contiguous()


def unpack_q8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float weights a q8 pack stands for."""
    n, k = q.shape
    rows = q.view(n // BLOCK, k // GROUP, 16, BLOCK, 2).permute(0, 3, 1, 2, 4).reshape(n, k)
    return rows.float() * scale[:, None]


_buffers = threading.local()


def _buffer(name: str, nbytes: int) -> int:
    """The address of a scratch buffer of at least `nbytes`, kept per thread and name, grown as needed."""
    held = getattr(_buffers, "held", None)
    if held is None:
        held = _buffers.held = {}
    buf = held.get(name)
    if buf is None or buf.numel() < nbytes:
        buf = held[name] = torch.empty(max(nbytes, 1 << 16), dtype=torch.uint8)
    return buf.data_ptr()


def _scratch(m: int, k: int, threads: int) -> int:
    """A buffer for x quantised to int16 plus its block scales and sums (2*M*K + 8*M*K/32 bytes), then
    each thread's room for a block's weights as AMX tiles (K/32 * 512 bytes, from a 64-byte boundary)."""
    return _buffer("x", 2 * m * k + 8 * m * (k // GROUP) + 64 + threads * (k // GROUP) * 512)


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _mm(fn, x, q, scales, bias, residual, norm, eps, glu) -> torch.Tensor:
    x = x.contiguous()
    m, k = x.shape
    if glu:
        if norm is not None:
            raise ValueError("a product takes a norm or a gated input, not both")
        k //= 2
    n = q.shape[0]
    y = torch.empty(m, n)
    threads = torch.get_num_threads()
    res = None if residual is None else residual.contiguous()
    fn(x.data_ptr(), q.data_ptr(), scales.data_ptr(), _ptr(bias), _ptr(res), y.data_ptr(), _scratch(m, k, threads),
       m, n, k, _ptr(norm), eps, int(glu), threads)
    return y


Tensor = torch.Tensor


def q4_mm(x: Tensor, q: Tensor, sm: Tensor, bias: Tensor | None = None, residual: Tensor | None = None,
          norm: Tensor | None = None, eps: float = 0.0, glu: bool = False) -> Tensor:
    """residual + f(x) @ W.T + bias for q4 weights [N, K] -> [M, N] float32, where f(x) is x [M, K]
    float32, or rms_norm(x) with norm (the norm's float32 weight [K]), or with glu, for x [M, 2K]
    holding gate then up, silu(gate) * up."""
    return _mm(_library()[0].chatloop_q4_mm, x, q, sm, bias, residual, norm, eps, glu)


def q4x8_mm(x: Tensor, q: Tensor, sm: Tensor, bias: Tensor | None = None, residual: Tensor | None = None,
            norm: Tensor | None = None, eps: float = 0.0, glu: bool = False) -> Tensor:
    """q4_mm with x quantised to int8 instead of int16 (twice the multiply-adds per instruction; for
    batches and prefills, which are bound by arithmetic)."""
    return _mm(_library()[0].chatloop_q4x8_mm, x, q, sm, bias, residual, norm, eps, glu)


def q8_mm(x: Tensor, q: Tensor, scale: Tensor, bias: Tensor | None = None, residual: Tensor | None = None,
          norm: Tensor | None = None, eps: float = 0.0, glu: bool = False) -> Tensor:
    """The same for q8 weights."""
    return _mm(_library()[0].chatloop_q8_mm, x, q, scale, bias, residual, norm, eps, glu)


def q8x8_mm(x: Tensor, q: Tensor, scale: Tensor, bias: Tensor | None = None, residual: Tensor | None = None,
            norm: Tensor | None = None, eps: float = 0.0, glu: bool = False) -> Tensor:
    """q8_mm with x quantised to int8 (only where the CPU has AVX-512 VNNI: formats())."""
    return _mm(_library()[0].chatloop_q8x8_mm, x, q, scale, bias, residual, norm, eps, glu)


# format -> its product; how its weights are packed (an -a8 format packs as the format it names)
PRODUCTS = {"int4-avx2": q4_mm, "int4-avx2-a8": q4x8_mm, "int8-avx2": q8_mm, "int8-avx2-a8": q8x8_mm}
PACK = {"int4-avx2": pack_q4, "int8-avx2": pack_q8}
# format -> lowbit.c's function (chatloop_q8x8_mm is only in a build with VNNI)
SYMBOLS = {"int4-avx2": "chatloop_q4_mm", "int4-avx2-a8": "chatloop_q4x8_mm", "int8-avx2": "chatloop_q8_mm",
           "int8-avx2-a8": "chatloop_q8x8_mm"}


def layout(fmt: str) -> str:
    """The format whose packed weights `fmt` runs on: -a8 formats differ only in how they take x."""
    return fmt.removesuffix("-a8")


def kv_row(dtype: torch.dtype, d: int) -> int:
    """The last dimension of a key/value cache of heads of size d: d float16 values, or (int8) d bytes
    and d / 32 float32 scales (lowbit.c's KV_ROW)."""
    return d + d // 8 if dtype == torch.int8 else d


def _check_caches(kc: Tensor, vc: Tensor, d: int) -> int:
    """1 for int8 caches, 0 for float16 ones; raises for anything else."""
    if not (kc.is_contiguous() and vc.is_contiguous()) or kc.dtype != vc.dtype or kc.shape != vc.shape:
        raise ValueError("the key and value caches must be contiguous and alike")
    if kc.dtype not in (torch.float16, torch.int8) or d % (32 if kc.dtype == torch.int8 else 8):
        raise ValueError("the caches must be float16 (head size divisible by 8) or int8 (by 32)")
    if kc.shape[-1] != kv_row(kc.dtype, d):
        raise ValueError(f"a {kc.dtype} cache of heads of {d} has rows of {kv_row(kc.dtype, d)}, not {kc.shape[-1]}")
    return int(kc.dtype == torch.int8)


def kv_quantize(x: Tensor) -> Tensor:
    """float [..., d] -> int8 cache rows [..., d + d / 8]: as lowbit.c's kv_store8 (tests, copies)."""
    d = x.shape[-1]
    blocks = x.float().reshape(*x.shape[:-1], d // 32, 32)
    scale = blocks.abs().amax(-1) / 127
    q = torch.round(blocks * torch.where(scale > 0, 1 / scale, 0)[..., None]).to(torch.int8)
    return torch.cat([q.reshape(*x.shape[:-1], d), scale.contiguous().view(torch.int8)], -1)


def kv_dequantize(rows: Tensor) -> Tensor:
    """int8 cache rows [..., d + d / 8] -> float32 [..., d], the values attention reads."""
    d = rows.shape[-1] * 8 // 9
    scale = rows[..., d:].contiguous().view(torch.float32)
    return (rows[..., :d].float().unflatten(-1, (d // 32, 32)) * scale[..., None]).flatten(-2)


def attention(q: Tensor, kc: Tensor, vc: Tensor, lens: list[int], slots: list[int], heads: int,
              scale: float) -> Tensor:
    """Attention for one query per row: q [b, >= heads, d] float32 (row i's query heads first; rows may
    hold more, e.g. the keys after them), caches [slots, kv heads, capacity, kv_row] (float16, or int8
    rows, see kv_row); row i reads slot slots[i] and attends over its first lens[i] positions. Returns
    [b, heads * d]. A decoding step's rows are its sequences; a prefill's are its tokens, once their
    keys and values are in the cache (a token at position p of its slot sees p + 1 positions)."""
    b, _, d = q.shape
    if q.stride(2) != 1 or q.stride(1) != d or q.dtype != torch.float32:
        raise ValueError("attention takes float32 queries with contiguous heads")
    kv8 = _check_caches(kc, vc, d)
    if len(lens) != b or len(slots) != b:
        raise ValueError(f"attention needs a length and a slot for each of the {b} rows")
    out = torch.empty(b, heads * d)
    max_len = max(lens)
    threads = torch.get_num_threads()
    lengths = torch.as_tensor(lens, dtype=torch.int64)
    where = torch.as_tensor(slots, dtype=torch.int64)
    lib = _library()[0]
    room = _buffer("attention", lib.chatloop_attention_scratch(where.data_ptr(), lengths.data_ptr(), b, heads,
                                                              kc.shape[1], d, threads))
    lib.chatloop_attention(
        q.data_ptr(), q.stride(0), kc.data_ptr(), vc.data_ptr(), kv8, out.data_ptr(), where.data_ptr(), 0,
        lengths.data_ptr(), b, heads, kc.shape[1], kc.shape[2], d, scale, room, max_len, threads)
    return out


def rope_store(qkv: Tensor, positions: Tensor, slots: list[int], rope: tuple[Tensor, Tensor], heads: int,
               kv_heads: int, kc: Tensor, vc: Tensor) -> None:
    """Rows of q, k and v side by side (qkv [b, (heads + 2 kv_heads) d] float32, the fused projection's
    output): each row's query and key heads rotated in place for its position (positions [b] int64),
    and its keys and values written at that position of its slot (slots[i]) in the caches
    [slots, kv heads, capacity, kv_row] (float16, or int8 rows). rope: the rotary (cos, signed sin)
    tables [positions, d]."""
    b = qkv.shape[0]
    cos, sin = rope
    d = cos.shape[1]
    if qkv.shape[1] != (heads + 2 * kv_heads) * d or not qkv.is_contiguous() or qkv.dtype != torch.float32:
        raise ValueError("rope_store takes contiguous float32 rows of q, k and v")
    kv8 = _check_caches(kc, vc, d)
    if len(slots) != b or positions.shape != (b,) or positions.dtype != torch.int64:
        raise ValueError(f"rope_store needs an int64 position and a slot for each of the {b} rows")
    if b and int(positions.max()) >= min(cos.shape[0], kc.shape[2]):
        raise ValueError("a position is past the rotary table or the cache")
    where = torch.as_tensor(slots, dtype=torch.int64)
    _library()[0].chatloop_rope_store(qkv.data_ptr(), b, where.data_ptr(), positions.data_ptr(), cos.data_ptr(),
                                      sin.data_ptr(), heads, kv_heads, d, kc.shape[2], kc.data_ptr(), vc.data_ptr(),
                                      kv8, torch.get_num_threads())


class Linear(ctypes.Structure):
    """lowbit.c's chatloop_linear: one projection's packed weights, as decode_step reads them."""
    _fields_ = [("fmt", ctypes.c_int32), ("x8", ctypes.c_int32), ("q", ctypes.c_void_p), ("s", ctypes.c_void_p),
                ("bias", ctypes.c_void_p), ("norm", ctypes.c_void_p), ("N", ctypes.c_int64), ("K", ctypes.c_int64)]


class Layer(ctypes.Structure):
    """lowbit.c's chatloop_layer."""
    _fields_ = [("qkv", Linear), ("o", Linear), ("gate_up", Linear), ("down", Linear), ("kc", ctypes.c_void_p),
                ("vc", ctypes.c_void_p), ("kv8", ctypes.c_int64)]


def linear(fmt: str, q: Tensor, scales: Tensor, bias: Tensor | None, norm: Tensor | None) -> Linear:
    """A projection's weights for decode_step (the tensors must outlive the returned struct)."""
    q4 = layout(fmt) == "int4-avx2"
    return Linear(4 if q4 else 8, int(fmt.endswith("-a8")), q.data_ptr(), scales.data_ptr(), _ptr(bias),
                  _ptr(norm), q.shape[0], q.shape[1] * (2 if q4 else 1))


def layers(projections: list[tuple[Linear, Linear, Linear, Linear]], caches: list[tuple[Tensor, Tensor]]):
    """The array decode_step takes: each layer's (qkv, o, gate_up, down) and its (keys, values) caches."""
    return (Layer * len(projections))(*(Layer(*lin, k.data_ptr(), v.data_ptr(), int(k.dtype == torch.int8))
                                        for lin, (k, v) in zip(projections, caches)))


def decode_step(stack, h: Tensor, first_slot: int, positions: list[int], rope: tuple[Tensor, Tensor], heads: int,
                kv_heads: int, capacity: int, eps: float, scale: float) -> Tensor:
    """Every layer of one decoding step in one call (lowbit.c's chatloop_decode_step): h [b, hidden]
    float32, the embedded tokens, is overwritten with the last layer's output (before the final
    norm) and returned. Row i is slot first_slot + i at position positions[i]; `stack` is from
    layers(); rope: the rotary (cos, signed sin) tables [positions, head_dim]."""
    b, hidden = h.shape
    cos, sin = rope
    d = cos.shape[1]
    if d % 8 or d > 512 or not (h.is_contiguous() and cos.is_contiguous() and sin.is_contiguous()):
        raise ValueError("decode_step needs contiguous rows and a head size divisible by 8, at most 512")
    first = stack[0]
    width, inter2 = first.qkv.N, first.gate_up.N
    pos = torch.tensor(positions, dtype=torch.int64)
    lens = pos + 1
    qkv, att, gu = torch.empty(b, width), torch.empty(b, heads * d), torch.empty(b, inter2)
    threads = torch.get_num_threads()
    lib = _library()[0]
    lib.chatloop_decode_step(
        ctypes.byref(stack), len(stack), h.data_ptr(), b, first_slot, pos.data_ptr(), lens.data_ptr(),
        cos.data_ptr(), sin.data_ptr(), heads, kv_heads, d, capacity, eps, scale, qkv.data_ptr(), att.data_ptr(),
        gu.data_ptr(), _buffer("scores", lib.chatloop_decode_scores(threads, int(lens.max()), b, heads, d)),
        _scratch(b, max(hidden, heads * d, inter2 // 2), threads), threads)
    return h
