"""Our AVX2 low-bit kernels (engine/lowbit.c, lowbit.py): packing, products, the norm and residual done in the call."""

import os

import pytest
import torch
import torch.nn.functional as F

from chatloop.engine import lowbit
from chatloop.engine.quant import LOWBIT, MANY, KernelPlan, PackedLinear, formats_for

needs_kernels = pytest.mark.skipif(not lowbit.available(), reason=f"not built here: {lowbit.unavailable_reason()}")


def _needs(fmt):
    if fmt in LOWBIT and fmt not in lowbit.formats():
        pytest.skip(f"{fmt} does not run here")


def _rel(y, ref):
    return ((y - ref).norm() / ref.norm()).item()


def test_q4_packing_holds_q4_1_weights_exactly():
    """Weights already on a 4-bit grid with float16 scale and min (GGUF's Q4_1, the default model's
    format) come back bit for bit: packing the default model loses nothing more."""
    torch.manual_seed(0)
    n, k = 48, 96
    scale = (torch.rand(n, k // 32) * 0.01 + 1e-3).half().float()
    low = (torch.randn(n, k // 32) * 0.05).half().float()
    q = torch.randint(0, 16, (n, k // 32, 32)).float()
    q[..., 0], q[..., 1] = 0, 15  # each group spans the whole grid, as a quantiser's output does
    w = (q * scale[..., None] + low[..., None]).view(n, k)
    assert torch.equal(lowbit.unpack_q4(*lowbit.pack_q4(w)), w)


@needs_kernels
@pytest.mark.parametrize("rows", [1, 3, 6, 8, 11])
def test_products_match_the_dequantised_weights(rows):
    """N = 112 is seven of the kernels' blocks of 16 output columns; 11 rows are a pass of 8 and one of
    3, which the int16 products run in their two loop orders (6: one pass, group by group). The only difference left is the activations' int16 rounding (blocks of 32)."""
    torch.manual_seed(rows)
    n, k = 112, 192
    w, x, b = torch.randn(n, k) * 0.05, torch.randn(rows, k), torch.randn(n)
    q4, sm = lowbit.pack_q4(w)
    q8, s8 = lowbit.pack_q8(w)
    ref4 = F.linear(x, lowbit.unpack_q4(q4, sm), b)
    ref8 = F.linear(x, lowbit.unpack_q8(q8, s8), b)
    assert _rel(lowbit.q4_mm(x, q4, sm, b), ref4) < 1e-4
    assert _rel(lowbit.q8_mm(x, q8, s8, b), ref8) < 1e-4
    assert _rel(lowbit.q4x8_mm(x, q4, sm, b), ref4) < 0.01  # x rounded to int8: ~0.5% here
    if "int8-avx2-a8" in lowbit.formats():  # (a build with VNNI)
        assert _rel(lowbit.q8x8_mm(x, q8, s8, b), ref8) < 0.01
        assert torch.equal(lowbit.q8x8_mm(x, q8, s8)[-1:], lowbit.q8x8_mm(x[-1:], q8, s8))
    assert _rel(ref8, F.linear(x, w, b)) < 0.01  # the layout is only a permutation: these are w's values
    for pack in (lowbit.pack_q4, lowbit.pack_q8):
        with pytest.raises(ValueError, match="divisible by 16"):
            pack(w[:100])
    # each row is computed alone: the same row gives the same bits in any batch
    assert torch.equal(lowbit.q4_mm(x, q4, sm)[-1:], lowbit.q4_mm(x[-1:], q4, sm))
    assert torch.equal(lowbit.q8_mm(x, q8, s8)[:1], lowbit.q8_mm(x[:1], q8, s8))
    assert torch.equal(lowbit.q4x8_mm(x, q4, sm)[-1:], lowbit.q4x8_mm(x[-1:], q4, sm))


@needs_kernels
def test_8_bit_activations_share_the_4_bit_weights_and_serve_the_rows_the_plan_gives_them():
    """int4-avx2-a8 is int4-avx2's packed weights with x rounded to int8: one copy of the weights
    for both, each format where the plan puts it, and its error that of llama.cpp's Q8 activations."""
    torch.manual_seed(7)
    w, x = torch.randn(64, 256) * 0.05, torch.randn(5, 256)
    lin = PackedLinear(w, None, ((1, "int4-avx2"), (MANY, "int4-avx2-a8")), "float32")
    assert lin.kernels["int4-avx2"] is lin.kernels["int4-avx2-a8"]
    q, sm = lin.kernels["int4-avx2"].q, lin.kernels["int4-avx2"].scales
    assert torch.equal(lin(x[:1]), lowbit.q4_mm(x[:1], q, sm))
    assert torch.equal(lin(x), lowbit.q4x8_mm(x, q, sm))
    exact = F.linear(x, lowbit.unpack_q4(q, sm))
    assert 1e-4 < _rel(lin(x), exact) < 0.01  # rounded, but only by the activations' int8 step


@needs_kernels
def test_8_bit_activations_cannot_overflow_a_groups_integer_sum():
    """The worst case for the int16 sums of the AVX2 kernel: every weight of a group but one at the top
    of the 4-bit grid (15), every activation at the top of int8 and of one sign. 31 * 15 * 127 would
    wrap around in int16; the activations' scale keeps the sum in range instead."""
    _needs("int4-avx2-a8")
    w = torch.ones(16, 128)
    w[:, ::32] = 0.0  # q = 15 everywhere but the first of each group (q = 0)
    q, sm = lowbit.pack_q4(w)
    for x in (torch.full((3, 128), 2.5), torch.full((3, 128), -0.5)):
        exact = F.linear(x, lowbit.unpack_q4(q, sm))
        assert _rel(lowbit.q4x8_mm(x, q, sm), exact) < 0.01


@needs_kernels
@pytest.mark.parametrize("fmt", ["int4-avx2", "int8-avx2", "int4-avx2-a8", "int8-avx2-a8"])
def test_a_projection_with_its_norm_and_residual_in_one_call_equals_them_op_by_op(fmt):
    """residual + rms_norm(x) @ W.T + b in one call, against the same sum computed op by op with the
    same format's weights and with float32 ones."""
    _needs(fmt)
    torch.manual_seed(3)
    n, k, eps = 80, 128, 1e-5
    w, b, norm = torch.randn(n, k) * 0.05, torch.randn(n), torch.rand(k) + 0.5
    x, residual = torch.randn(6, k) * 4, torch.randn(6, n)
    fused = PackedLinear(w, b, ((MANY, fmt),), "float32", norm=norm, eps=eps)
    y = fused(x, residual=residual)
    ref = residual + F.linear(F.rms_norm(x, (k,), norm, eps), w, b)
    assert y.shape == (6, n)
    assert _rel(y - residual, ref - residual) < (0.02 if fmt == "int8-avx2" else 0.15)  # the weights' rounding
    # with a dense format for other row counts, the same object normalises before the product
    mixed = PackedLinear(w, b, ((1, fmt), (MANY, "float32")), "float32", norm=norm, eps=eps)
    assert torch.allclose(mixed(x, residual=residual), ref, atol=1e-4)
    assert torch.equal(mixed(x[:1], residual=residual[:1]), fused(x[:1], residual=residual[:1]))


@needs_kernels
def test_the_kernels_run_in_a_whole_model_plan():
    plan = KernelPlan.uniform("int4-avx2", head="int8-avx2")
    assert plan.act == "float32" and plan.formats() == {"int4-avx2", "int8-avx2"}
    assert {"int4-avx2", "int8-avx2"} <= set(formats_for("float32"))
    assert not {"int4-avx2", "int8-avx2"} & set(formats_for("bfloat16"))  # they take float32 activations


@needs_kernels
def test_the_library_is_built_once_and_reused(tmp_path):
    first = lowbit._build(tmp_path)
    made = first.stat().st_mtime_ns
    assert lowbit._build(tmp_path) == first and first.stat().st_mtime_ns == made
    assert [p.name for p in first.parent.iterdir()] == ["liblowbit.so"]  # no temporary left behind


def test_without_the_kernels_their_formats_are_not_offered(monkeypatch):
    monkeypatch.setenv("CHATLOOP_LOWBIT", "0")
    lowbit._library.cache_clear()
    try:
        assert not lowbit.available() and lowbit.unavailable_reason() == "CHATLOOP_LOWBIT=0"
        assert "int4-avx2" not in formats_for("float32")
        with pytest.raises(ValueError, match="not available here"):
            PackedLinear(torch.randn(8, 64), None, ((MANY, "int4-avx2"),), "float32")
    finally:
        monkeypatch.undo()
        lowbit._library.cache_clear()
    assert lowbit.available() == (os.environ.get("CHATLOOP_LOWBIT", "1") != "0" and lowbit._library()[0] is not None)


def test_a_compiler_error_leaves_the_formats_off_with_the_reason(monkeypatch, tmp_path):
    bad = tmp_path / "broken.c"
    bad.write_text("this is not C\n")
    monkeypatch.setattr(lowbit, "SOURCE", bad)
    monkeypatch.setenv("CHATLOOP_HOME", str(tmp_path / "home"))
    lowbit._library.cache_clear()
    try:
        if lowbit._compiler() is None or any(f not in lowbit.cpu_flags() for f in lowbit.NEEDS):
            pytest.skip("no compiler or no AVX2 here: nothing is compiled")
        assert not lowbit.available() and "failed" in lowbit.unavailable_reason()
        assert not list((tmp_path / "home").rglob("*.so"))
    finally:
        monkeypatch.undo()
        lowbit._library.cache_clear()


@needs_kernels
@pytest.mark.parametrize("extra, amx_flags, kept", [
    (["-mno-such-instructions"], None, []),  # a wider flag it does not know: the AVX2 build
    (["-DKEPT", "-mno-such-tiles"], ["-mno-such-tiles"], ["-DKEPT"]),  # AMX's: the rest is kept
])
def test_a_compiler_without_the_wider_flags_builds_what_it_can(monkeypatch, tmp_path, extra, amx_flags, kept):
    """An older compiler that does not know a flag for this CPU's wider instructions (AVX-512, VNNI,
    AMX) still gives kernels: without the AMX flags first (the others kept), else the AVX2 build."""
    if amx_flags:
        monkeypatch.setattr(lowbit, "AMX_FLAGS", amx_flags)
    monkeypatch.setattr(lowbit, "cflags", lambda: lowbit.CFLAGS + extra)
    real, tried = lowbit._build_with, []
    monkeypatch.setattr(lowbit, "_build_with", lambda out, flags: (tried.append(flags), real(out, flags))[1])
    monkeypatch.setenv("CHATLOOP_HOME", str(tmp_path / "home"))
    lowbit._library.cache_clear()
    try:
        assert lowbit.available(), lowbit.unavailable_reason()
        assert tried == [lowbit.CFLAGS + extra, lowbit.CFLAGS + kept]
        assert len(list((tmp_path / "home").rglob("*.so"))) == 1
        assert lowbit.amx_rows() == 0
        w, x = torch.randn(32, 64), torch.randn(2, 64)
        assert _rel(lowbit.q8_mm(x, *lowbit.pack_q8(w)), F.linear(x, w)) < 0.01
    finally:
        monkeypatch.undo()
        lowbit._library.cache_clear()


def _caches(shape: tuple[int, ...], cache: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Random key and value caches as the runner holds them: float16, or int8 rows (lowbit.kv_row)."""
    made = (torch.randn(shape) * 3 for _ in range(2))
    return tuple(lowbit.kv_quantize(x) if cache == "int8" else x.half() for x in made)


def _read(cache: torch.Tensor) -> torch.Tensor:
    return lowbit.kv_dequantize(cache) if cache.dtype == torch.int8 else cache.float()


def _assert_sdpa(out, qk, kc, vc, lens, slots, heads, rtol, atol):
    """Each row of lowbit.attention's output is SDPA's over the same slot's first lens[i] positions
    (scale 0.125), read back as the cache holds them."""
    kv, d = kc.shape[1], qk.shape[2]
    for i, (n, slot) in enumerate(zip(lens, slots)):
        q = qk[i, :heads].view(1, kv, heads // kv, d)
        keys, values = (_read(c[slot : slot + 1, :, :n]) for c in (kc, vc))
        ref = F.scaled_dot_product_attention(q, keys, values, scale=0.125)
        assert torch.allclose(out[i], ref.reshape(-1), rtol=rtol, atol=atol), i


@needs_kernels
@pytest.mark.parametrize("cache", ["float16", "int8"])
@pytest.mark.parametrize("heads, kv, d", [(9, 3, 64), (20, 2, 72), (4, 4, 32), (14, 2, 64)])
def test_attention_equals_sdpa_row_by_row(heads, kv, d, cache):
    """Rows of different lengths, in slots given per row (a decoding step's consecutive slots, or a
    prefill's tokens, several in one slot), grouped-query heads: 9 query heads on 3 key/value heads
    (the default model), 7 on 1 (Qwen 0.5B's 14 on 2), 10 on 1 (past a group of 8), one each; lengths
    that are and are not whole vectors of 8; a head size that is not a whole number of the kernel's
    passes over the values (72). Both caches: SDPA sees the values the cache holds."""
    if cache == "int8" and d % 32:
        rows = torch.zeros(1, kv, 8, d + d // 8, dtype=torch.int8)
        with pytest.raises(ValueError, match="int8 .by 32"):
            lowbit.attention(torch.randn(1, heads + kv, d), rows, rows.clone(), [3], [0], heads, 0.3)
        return
    torch.manual_seed(5)
    cap = 64
    kc, vc = _caches((6, kv, cap, d), cache)
    qk = torch.randn(5, heads + kv, d)  # the keys after the queries, as the runner's rotated q and k
    lens, slots = [1, 17, 40, 18, 2], [2, 3, 4, 3, 0]
    out = lowbit.attention(qk, kc, vc, lens, slots, heads, 0.125)
    _assert_sdpa(out, qk, kc, vc, lens, slots, heads, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="divisible by 8"):
        lowbit.attention(torch.randn(1, 4, 12), torch.randn(1, 1, 8, 12).half(),
                         torch.randn(1, 1, 8, 12).half(), [3], [0], 3, 0.3)
    with pytest.raises(ValueError, match="float16 .* or int8"):
        lowbit.attention(qk, _read(kc), _read(vc), lens, slots, heads, 0.125)
    with pytest.raises(ValueError, match="rows of"):
        lowbit.attention(qk, kc[..., :-8].contiguous(), vc[..., :-8].contiguous(), lens, slots, heads, 0.125)
    with pytest.raises(ValueError, match="a length and a slot for each"):
        lowbit.attention(qk, kc, vc, lens[:2], slots[:2], heads, 0.125)


@needs_kernels
@pytest.mark.parametrize("cache", ["float16", "int8"])
@pytest.mark.parametrize("heads, kv, d", [(9, 3, 64), (20, 2, 72)])
def test_attention_over_long_histories_equals_sdpa(heads, kv, d, cache):
    """Decoding rows longer than a task's part of the positions (lowbit.c's SPLIT, 1024): each part's
    output, max score and softmax sum are weighed together after, exactly or nearly as one softmax."""
    if cache == "int8" and d % 32:
        pytest.skip("an int8 cache takes heads of whole blocks of 32")
    torch.manual_seed(7)
    kc, vc = _caches((4, kv, 2600, d), cache)
    qk = torch.randn(4, heads + kv, d)
    lens, slots = [2500, 1025, 1024, 3], [1, 0, 3, 2]
    out = lowbit.attention(qk, kc, vc, lens, slots, heads, 0.125)
    _assert_sdpa(out, qk, kc, vc, lens, slots, heads, rtol=1e-5, atol=1e-4)


@needs_kernels
@pytest.mark.parametrize("cache", ["float16", "int8"])
@pytest.mark.parametrize("heads, kv, d", [(9, 3, 64), (20, 2, 72), (4, 4, 32), (16, 1, 64), (28, 4, 128)])
def test_attention_over_a_prompts_tokens_equals_sdpa(heads, kv, d, cache):
    """A prefill's rows: runs of a prompt's tokens (one slot, consecutive positions) go tiled, several
    tokens and query heads at once over keys and values widened once; short runs and a decoding
    row go row by row, in the same call. Runs from position 0 and continuing a cached prefix, one
    longer than a tile of 16 tokens, groups of query heads past a task's 12 (16 on 1), head sizes
    that are not a whole number of the values' passes (72, 128)."""
    if cache == "int8" and d % 32:
        pytest.skip("an int8 cache takes heads of whole blocks of 32")
    torch.manual_seed(6)
    kc, vc = _caches((6, kv, 160, d), cache)
    runs = [(2, 100, 37), (4, 10, 3), (0, 0, 5), (5, 77, 1), (3, 0, 16)]  # (slot, first position, tokens)
    lens = [start + t + 1 for _, start, n in runs for t in range(n)]
    slots = [slot for slot, _, n in runs for _ in range(n)]
    qk = torch.randn(len(lens), heads + kv, d)
    out = lowbit.attention(qk, kc, vc, lens, slots, heads, 0.125)
    _assert_sdpa(out, qk, kc, vc, lens, slots, heads, rtol=1e-5, atol=1e-4)


def test_int8_cache_rows_hold_each_block_of_32_within_half_a_step():
    """kv_quantize: d bytes then d / 32 float32 scales (max|x| / 127 of each block); reading a row
    back is off by at most half a step of its block, and an all-zero block reads back as zeros."""
    x = torch.randn(3, 96) * torch.tensor([0.01, 1.0, 50.0]).repeat_interleave(32)
    x[1, 32:64] = 0
    rows = lowbit.kv_quantize(x)
    assert rows.dtype == torch.int8 and rows.shape == (3, 96 + 12)
    scales = rows[:, 96:].contiguous().view(torch.float32)
    assert torch.allclose(scales, x.view(3, 3, 32).abs().amax(-1) / 127)
    back = lowbit.kv_dequantize(rows)
    assert (back - x).abs().le(scales.repeat_interleave(32, -1) / 2 * 1.001 + 1e-12).all()
    assert torch.equal(back[1, 32:64], torch.zeros(32))


@needs_kernels
@pytest.mark.parametrize("cache", ["float16", "int8"])
@pytest.mark.parametrize("heads, kv, d", [(9, 3, 64), (4, 2, 72)])
def test_rope_store_rotates_and_caches_as_torch_does(heads, kv, d, cache):
    """A prefill's rotary embedding and cache writes in one call: q and k rotated in place as the
    runner's torch path rotates them (x * cos + roll(x, d/2) * signed sin), v left alone, and each
    row's key and value heads in its slot at its position, as float16 or as int8 rows (kv_quantize's);
    nothing else in the caches changes. Head sizes of 64 and 72 (half of it, 36, is not a whole
    vector of 8; int8 rows need whole blocks of 32)."""
    from chatloop.engine.runner import _rotate

    if cache == "int8" and d % 32:
        return
    torch.manual_seed(9)
    positions = torch.tensor([0, 1, 2, 5, 6, 30], dtype=torch.int64)
    slots = [1, 1, 1, 3, 3, 0]
    table = 40
    angles = torch.rand(table, d // 2) * 6
    cos = torch.cat([angles.cos(), angles.cos()], -1)
    sin = torch.cat([-angles.sin(), angles.sin()], -1)  # rotate_half's sign folded in, as the runner's table
    qkv = torch.randn(len(slots), (heads + 2 * kv) * d)
    kc, vc = _caches((4, kv, 32, d), cache)
    want_k, want_v = kc.clone(), vc.clone()
    x = qkv.view(len(slots), heads + 2 * kv, d)
    rotated = _rotate(x[:, : heads + kv], cos[positions].unsqueeze(1), sin[positions].unsqueeze(1))
    as_cached = lowbit.kv_quantize if cache == "int8" else torch.Tensor.half
    for i, (p, slot) in enumerate(zip(positions.tolist(), slots)):
        want_k[slot, :, p] = as_cached(rotated[i, heads:])
        want_v[slot, :, p] = as_cached(x[i, heads + kv :])
    values = x[:, heads + kv :].clone()
    lowbit.rope_store(qkv, positions, slots, (cos, sin), heads, kv, kc, vc)
    assert torch.allclose(x[:, : heads + kv], rotated, atol=1e-5)
    assert torch.equal(x[:, heads + kv :], values)
    assert torch.equal(vc, want_v)
    if cache == "int8":  # the rotation's last bit may move a key across a rounding boundary: one step
        steps = want_k[..., d:].contiguous().view(torch.float32).repeat_interleave(32, -1)
        assert ((_read(kc) - _read(want_k)).abs() <= steps * 1.01).all()
        assert (kc != want_k).float().mean() < 0.01
    else:
        assert torch.allclose(kc.float(), want_k.float(), rtol=1e-3, atol=1e-3)  # 1 ulp
    with pytest.raises(ValueError, match="past the rotary table"):
        lowbit.rope_store(qkv, positions + table, slots, (cos, sin), heads, kv, kc, vc)
    with pytest.raises(ValueError, match="a slot for each"):
        lowbit.rope_store(qkv, positions, slots[:2], (cos, sin), heads, kv, kc, vc)


@needs_kernels
@pytest.mark.parametrize("fmt", ["int4-avx2", "int8-avx2", "int4-avx2-a8", "int8-avx2-a8", "float32"])
def test_a_gated_down_projection_takes_gate_and_up_side_by_side(fmt):
    """down(silu(gate) * up) + residual in one call of our kernels (their own vectorised exp), the
    same as op by op; dense formats do it op by op."""
    _needs(fmt)
    torch.manual_seed(6)
    w, gate_up, residual = torch.randn(48, 64) * 0.1, torch.randn(5, 128) * 3, torch.randn(5, 48)
    gate, up = gate_up.chunk(2, dim=-1)
    lin = PackedLinear(w, None, ((MANY, fmt),), "float32")
    y = lin(gate_up, residual=residual, glu=True)
    ref = residual + lin(F.silu(gate) * up)
    if fmt.endswith("-a8"):  # our exp and torch's may round an input to the other int8 step
        assert _rel(y - residual, ref - residual) < 0.01
    else:
        assert torch.allclose(y, ref, rtol=1e-5, atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("setting", ["-3", "many"])
def test_a_bad_amx_setting_is_named_and_the_default_kept(monkeypatch, caplog, setting):
    """CHATLOOP_LOWBIT_AMX takes a number of rows (0: off); anything else is reported as such, not as
    the OS refusing the tiles, and the default stays in force."""
    if lowbit.amx_rows() == 0:
        pytest.skip("no AMX here (or the OS did not grant its tiles)")
    monkeypatch.setenv("CHATLOOP_LOWBIT_AMX", setting)
    lowbit._library.cache_clear()
    try:
        with caplog.at_level("WARNING", logger=lowbit.log.name):
            assert lowbit.amx_rows() == lowbit.AMX_MIN_ROWS
        assert f"CHATLOOP_LOWBIT_AMX={setting!r} is not a number of rows" in caplog.text
        assert "did not grant" not in caplog.text
    finally:
        monkeypatch.undo()
        lowbit._library.cache_clear()


@needs_kernels
def test_amx_tiles_give_the_vector_paths_results_bit_for_bit():
    """Where the CPU has AMX, prefill-sized products run on its tiles: the same int32 sums (int16 x as
    two byte products), scaled as the vector paths scale theirs. 45 rows are two passes of 16 and one of
    13; 130 a tile of 128 rows and one of 2. PyTorch's own AMX products (bfloat16, oneDNN) in between
    keep working: each side configures the tiles for itself."""
    if lowbit.amx_rows() == 0:
        pytest.skip("no AMX here (or the OS did not grant its tiles)")
    torch.manual_seed(0)
    n, k = 96, 192
    w = torch.randn(n, k) * 0.05
    packs = [(lowbit.q4_mm, lowbit.pack_q4(w)), (lowbit.q4x8_mm, lowbit.pack_q4(w)), (lowbit.q8_mm, lowbit.pack_q8(w))]
    if "int8-avx2-a8" in lowbit.formats():
        packs.append((lowbit.q8x8_mm, lowbit.pack_q8(w)))
    bias, norm = torch.randn(n), torch.rand(k) + 0.5
    setting = lowbit.amx_rows()
    try:
        for rows in (45, 130):
            x, xg, res = torch.randn(rows, k), torch.randn(rows, 2 * k), torch.randn(rows, n)
            for fn, (q, s) in packs:
                for args in ({"bias": bias}, {"norm": norm, "eps": 1e-5, "residual": res}, {"glu": True}):
                    inp = xg if args.get("glu") else x
                    assert lowbit.amx_rows(0) == 0
                    vectors = fn(inp, q, s, **args)
                    assert lowbit.amx_rows(1) == 1
                    tiles = fn(inp, q, s, **args)
                    assert torch.equal(tiles, vectors), (fn.__name__, rows, list(args))
                    a = torch.randn(rows, k, dtype=torch.bfloat16)
                    assert torch.allclose((a @ a.T).float(), a.float() @ a.float().T, rtol=0.02, atol=0.5)
            assert _rel(lowbit.q4_mm(x, *packs[0][1]), F.linear(x, lowbit.unpack_q4(*packs[0][1]))) < 1e-4
    finally:
        lowbit.amx_rows(setting)
