"""The model runner: our own forward pass over a slot-based KV cache (no `model.generate`).

The runner owns the weights and the cache and knows nothing about text. Each active sequence
lives in a cache *slot*; active slots are kept compact (0..n-1) so that one decode step is a
single batched forward over `n` rows, each at its own position. Prefill writes one new sequence
into the next free slot. Removing a sequence moves the last slot into the hole.

It takes the weights of a Hugging Face Llama-family model, packs them (q/k/v and gate/up fused
into one matrix each; float32, bfloat16, int8 or int4, per the kernel plan of quant.py) and runs the same arithmetic as
`transformers` (float32 output is token-for-token equal to `generate(do_sample=False)`), with
its own attention/cache plumbing, which is where batching lives.

With a prefix cache (prefix_cache.py) a prompt whose start was seen before (an earlier turn of
the chat, a shared system prompt, tool schemas) gets it copied into its slot, and only the rest is
prefilled, at a start offset: those tokens attend over the copied positions and their own. A
slot's history is stored back into the prefix cache after prefill and when it is removed. Image
features are not token ids: nothing from a prompt's first image token on is stored or reused.

    python -m chatloop.engine.runner   # compares greedy output with transformers generate()
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from chatloop.config import get_settings
from chatloop.engine import lowbit
from chatloop.engine.prefix_cache import BLOCK, PrefixCache
from chatloop.engine.quant import LOWBIT, PREFILL_ROWS, KernelPlan, PackedLinear, fuse, pick

CACHE_GROWTH = 256  # cache capacity grows in steps of this many positions
TILED_FROM = 256  # a fresh prompt of this many tokens or more attends through our kernel (_forward)



@dataclass
class _Layer:
    qkv: PackedLinear  # holds the input norm (ln1) in front of it
    o: PackedLinear
    gate_up: PackedLinear  # holds the post-attention norm (ln2)
    down: PackedLinear


class ModelRunner:
    def __init__(self, model, plan: KernelPlan | str, max_slots: int, max_len: int, prefix_cache_bytes: int = 0,
                 device: str = "cpu", kv_cache: str | None = None):
        """plan: a KernelPlan (quant.py: activation dtype, weight format per number of rows) or one
        format name for all ('float32' is the exact one). prefix_cache_bytes: the prefix cache's
        budget (0: no prefix cache). device: where weights, cache and compute live ('cpu', 'cuda');
        the model itself stays on the CPU, the runner copies what it needs. kv_cache: 'int8' or
        'float16', where our attention kernel runs (None: the kv_cache setting); other plans keep
        their activations' dtype."""
        self.device = dev = torch.device(device)
        cfg = model.config.get_text_config()  # a vision-language model's text half
        self.config = cfg
        self.plan = plan if isinstance(plan, KernelPlan) else KernelPlan.uniform(plan)
        act = self.plan.act
        self.dtype = torch.float32 if act == "float32" else torch.bfloat16
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.q_size = self.n_heads * self.head_dim
        self.kv_size = self.n_kv * self.head_dim
        self.eps = cfg.rms_norm_eps
        self.scale = self.head_dim**-0.5
        decoder = getattr(model.model, "text_model", model.model)
        self.rotary = decoder.rotary_emb
        self.embed = decoder.embed_tokens.weight.detach().to(device=dev, dtype=self.dtype)
        self.norm = decoder.norm.weight.detach().to(device=dev, dtype=self.dtype)
        # float32 everywhere through F.linear is the exact plan: transformers' arithmetic, op for op.
        # Any other plan takes the fused path (fewer, larger ops per layer; see _forward).
        self.exact = self.plan == KernelPlan.uniform("float32")
        # Decoding rows of different lengths need a mask; for float32 on a CPU two batched products, a
        # bias and a softmax then take half of SDPA's time with a mask (8 rows: 85 vs 180 us a layer).
        # The exact plan keeps SDPA (transformers' arithmetic); bf16 products are slow without native bf16.
        self.small_attention = not self.exact and self.dtype == torch.float32 and dev.type == "cpu"
        # ...and where our AVX2 kernels are built, one C call per layer for all rows and heads
        # (lowbit.attention: SDPA's set-up for one query cost ~50 us a layer, ours ~5)
        self.native_attention = self.small_attention and self.head_dim % 8 == 0 and lowbit.available()
        self._native_steps: dict[str, tuple] = {}  # body format -> (projections, capacity, layer array)
        self.one_call_steps = True  # decode through lowbit.decode_step where it can (False: layer by layer)
        self._rope_table = None
        half = self.head_dim // 2
        # rotate_half(x) * sin == roll(x, half) * (sign * sin): the sign is folded into sin once
        self._rope_sign = torch.cat([-torch.ones(half), torch.ones(half)]).to(device=dev, dtype=self.dtype)
        if getattr(self.rotary, "rope_type", "default") in ("default", "linear", "llama3"):
            # These do not depend on the sequence length: cos/sin of every position, computed once
            # by the model's own module (the same values it computes per call), then just indexed.
            positions = torch.arange(max_len)[None, :]
            cos, sin = self.rotary(torch.zeros(1, dtype=torch.float32), positions)
            cos, sin = cos[0].to(device=dev, dtype=self.dtype), sin[0].to(device=dev, dtype=self.dtype)
            self._rope_table = (cos, sin * self._rope_sign)
        # ...whose cache is int8 (CHATLOOP_KV_CACHE, default) or float16: with 8 rows and a few hundred
        # positions, or one row and a few thousand, the cache, not the weights, is most of what a step
        # reads. An int8 cache (blocks of 32 with a scale each, llama.cpp's q8_0) holds 56% of float16's
        # bytes; our C kernels write it (lowbit.rope_store), so it needs the rotary table. Prefill writes
        # the cache and reads it back as float32.
        self.kv8 = (self.native_attention and self._rope_table is not None and self.head_dim % 32 == 0
                    and (kv_cache or get_settings().kv_cache) == "int8")
        self.cache_dtype = torch.int8 if self.kv8 else torch.float16 if self.native_attention else self.dtype
        self.kv_row = lowbit.kv_row(self.cache_dtype, self.head_dim)
        self.kv_cache = str(self.cache_dtype).removeprefix("torch.")  # its name, as logs and benchmarks say it
        body, head = self.plan.body, self.plan.head
        self.lm_head = self.make_head(model, head)
        self.layers = []
        eps = self.eps
        for layer in decoder.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append(_Layer(
                qkv=fuse([attn.q_proj, attn.k_proj, attn.v_proj], body, act, dev, layer.input_layernorm.weight, eps),
                o=PackedLinear(attn.o_proj.weight, attn.o_proj.bias, body, act, dev),
                gate_up=fuse([mlp.gate_proj, mlp.up_proj], body, act, dev, layer.post_attention_layernorm.weight,
                             eps),
                down=PackedLinear(mlp.down_proj.weight, mlp.down_proj.bias, body, act, dev),
            ))
        self.max_slots = max_slots
        self.max_len = max_len
        self.capacity = 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.lens = [0] * max_slots  # tokens held in each slot's cache
        self.n = 0  # active slots are 0..n-1
        block_bytes = len(self.layers) * 2 * self.n_kv * self.kv_row * BLOCK * self.cache_dtype.itemsize
        self.prefix = PrefixCache(prefix_cache_bytes, block_bytes) if prefix_cache_bytes >= block_bytes else None
        self.cacheable = [0] * max_slots  # how much of each slot's history may go into the prefix cache
        self.prefilled_tokens = 0  # prompt tokens run through prefill
        self.reused_tokens = 0  # prompt tokens copied from the prefix cache instead
        self.last_reused: list[int] = []  # per prompt of the last prefill

    def make_head(self, model, table) -> PackedLinear:
        """The output projection in the formats of `table`, with the final norm in front of it."""
        return PackedLinear(model.lm_head.weight, getattr(model.lm_head, "bias", None), table, self.plan.act,
                            self.device, self.norm, self.eps)

    def _native_step(self, rows: int):
        """The layer array for lowbit.decode_step, where a decoding step of `rows` rows can run as one C
        call: the body's format for that many rows is one of our kernels', with our attention and the
        rotary table. None otherwise (the step then runs layer by layer below)."""
        fmt = pick(self.plan.body, rows)
        if (not self.one_call_steps or fmt not in LOWBIT or not self.native_attention or self._rope_table is None
                or self.head_dim > 512):
            return None
        projections, capacity, stack = self._native_steps.get(fmt, (None, 0, None))
        if projections is None:
            projections = [tuple(lowbit.linear(fmt, lin.kernels[fmt].q, lin.kernels[fmt].scales, lin.bias, lin.norm)
                                 for lin in (layer.qkv, layer.o, layer.gate_up, layer.down)) for layer in self.layers]
        if capacity != self.capacity:  # the caches were reallocated
            stack = lowbit.layers(projections, list(zip(self.k, self.v)))
        self._native_steps[fmt] = (projections, self.capacity, stack)
        return stack

    def weight_bytes(self, rows: int) -> int:
        """Bytes of weights one decoding step with `rows` sequences reads (the roofline's numerator)."""
        return self.lm_head.nbytes(rows) + sum(
            lin.nbytes(rows) for layer in self.layers for lin in (layer.qkv, layer.o, layer.gate_up, layer.down))

    # --- cache management -------------------------------------------------------------

    def _ensure_capacity(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        if needed > self.max_len:
            raise ValueError(f"sequence of {needed} tokens exceeds the cache limit {self.max_len}")
        new_cap = min(self.max_len, -(-needed // CACHE_GROWTH) * CACHE_GROWTH)
        shape = (self.max_slots, self.n_kv, new_cap, self.kv_row)
        for i in range(len(self.layers)):
            k = torch.zeros(shape, dtype=self.cache_dtype, device=self.device)
            v = torch.zeros(shape, dtype=self.cache_dtype, device=self.device)
            if self.capacity:
                k[:, :, : self.capacity] = self.k[i]
                v[:, :, : self.capacity] = self.v[i]
                self.k[i], self.v[i] = k, v
            else:
                self.k.append(k)
                self.v.append(v)
        self.capacity = new_cap

    @torch.inference_mode()
    def remove(self, slot: int, history: list[int] | None = None) -> int | None:
        """Free `slot`; returns the slot index that was moved into it (or None). `history`: the token
        ids fed into the slot (prompt, then the answer's tokens); its full blocks are kept in the
        prefix cache first."""
        if history is not None:
            self._store(slot, history)
        last = self.n - 1
        moved = None
        if slot != last:
            for k, v in zip(self.k, self.v):
                k[slot].copy_(k[last])
                v[slot].copy_(v[last])
            self.lens[slot], self.cacheable[slot] = self.lens[last], self.cacheable[last]
            moved = last
        self.lens[last] = 0
        self.n -= 1
        return moved

    def clear(self) -> None:
        self.n = 0
        self.lens = [0] * self.max_slots

    def _reuse(self, slot: int, prompt: list[int], limit: int) -> int:
        """Copy the longest cached prefix of `prompt[:limit]` into `slot`; returns its length (the last
        prompt token is always prefilled: its logits pick the first answer token)."""
        if self.prefix is None:
            return 0
        blocks = self.prefix.match(prompt, min(limit, len(prompt) - 1))
        if not blocks:
            return 0
        data = torch.cat(blocks, dim=3)  # [layers, 2, kv, n, d]
        n = data.shape[3]
        for i, (k, v) in enumerate(zip(self.k, self.v)):
            k[slot, :, :n] = data[i, 0]
            v[slot, :, :n] = data[i, 1]
        return n

    def _store(self, slot: int, history: list[int]) -> None:
        if self.prefix is None:
            return
        held = history[: min(len(history), self.lens[slot], self.cacheable[slot])]

        def read(start: int, stop: int) -> torch.Tensor:
            return torch.stack([torch.stack((k[slot, :, start:stop], v[slot, :, start:stop]))
                                for k, v in zip(self.k, self.v)])

        self.prefix.store(held, read)

    # --- forward ------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], embeds: list[tuple | None] | None = None) -> torch.Tensor:
        """Put new sequences in the next free slots (in order); returns their last logits [n, vocab].

        Several prompts run as one packed row with a block-diagonal causal mask, so the matrix
        multiplies see all their tokens at once. `embeds[i]`, if given, is (positions, vectors):
        input embeddings that replace those of prompt i's tokens at those positions (an image's
        features at its image tokens, engine/vision.py).
        """
        if self.n + len(prompts) > self.max_slots:
            raise RuntimeError("not enough free cache slots")
        self._ensure_capacity(max(len(p) for p in prompts))
        embeds = embeds or [None] * len(prompts)
        # nothing from a prompt's first image token on may be stored or reused: its features are not its ids
        limits = [self.max_len if e is None or not len(e[0]) else int(e[0].min()) for e in embeds]
        starts = [self._reuse(self.n + j, p, limit) for j, (p, limit) in enumerate(zip(prompts, limits))]
        shifted = [None if e is None else (e[0] - s, e[1]) for e, s in zip(embeds, starts)]
        packed = torch.tensor([[t for p, s in zip(prompts, starts) for t in p[s:]]], dtype=torch.long,
                              device=self.device)
        logits = self._forward(packed, self.n, starts, lengths=[len(p) - s for p, s in zip(prompts, starts)],
                               embeds=shifted)
        for p, limit in zip(prompts, limits):
            self.lens[self.n], self.cacheable[self.n] = len(p), limit
            self._store(self.n, p)
            self.n += 1
        self.prefilled_tokens += packed.shape[1]
        self.reused_tokens += sum(starts)
        self.last_reused = starts
        return logits

    @torch.inference_mode()
    def score(self, ids: list[int]) -> torch.Tensor:
        """Logits for every position of `ids` (for perplexity/evaluation); leaves the cache as is."""
        if self.n >= self.max_slots:
            raise RuntimeError("no free cache slot")
        self._ensure_capacity(len(ids))
        return self._forward(torch.tensor([ids], dtype=torch.long, device=self.device), self.n, [0], all_logits=True)

    @torch.inference_mode()
    def decode(self, tokens: list[int]) -> torch.Tensor:
        """One step for every active slot (tokens[i] goes to slot i); returns logits [n, vocab]."""
        n = self.n
        assert len(tokens) == n
        positions = self.lens[:n]
        self._ensure_capacity(max(positions) + 1)
        input_ids = torch.tensor(tokens, dtype=torch.long, device=self.device).view(n, 1)
        logits = self._forward(input_ids, 0, positions)
        for i in range(n):
            self.lens[i] += 1
        return logits

    def _forward(self, input_ids, first_slot: int, starts: list[int], lengths=None, all_logits=False, embeds=None):
        """Decode (no lengths: one token per row, rows = slots first_slot..) or prefill (b == 1: a
        packed row of `lengths` prompts for slots first_slot.., each from position starts[j]; one
        token too, as a prompt cached but for its last token is, with the prefills' formats).
        Activations are token-major, [tokens, hidden], so every linear layer sees a plain matrix.
        Returns float32 logits: [b, vocab] for decode, [len(lengths), vocab] for prefill, or
        [t, vocab] with all_logits."""
        b, t = input_ids.shape
        decode = lengths is None and not all_logits
        dev = self.device
        H, KV, d = self.n_heads, self.n_kv, self.head_dim
        start = torch.tensor(starts, dtype=torch.long, device=dev)
        lengths = lengths or [t]
        if decode:
            positions = start
        else:
            positions = torch.cat([torch.arange(s, s + n, device=dev) for s, n in zip(starts, lengths)])
        kv_len = max(starts) + t
        h = F.embedding(input_ids.view(-1), self.embed)
        stack = self._native_step(b) if decode else None
        if stack is not None:  # every layer in one call of our kernels
            h = lowbit.decode_step(stack, h, first_slot, starts, self._rope_table, H, KV, self.capacity, self.eps,
                                   self.scale)
            return self.lm_head(h).float().cpu()
        at = 0
        for n, spliced in zip(lengths, embeds or ()):
            if spliced is not None:
                where, vectors = spliced
                h[at + where.to(dev)] = vectors.to(device=dev, dtype=h.dtype)
            at += n
        # The rotary embedding and cache writes in one C call a layer where our kernels run (for a
        # prefill, torch's roll, multiply-adds and a copy per prompt took ~12 ms of 331 tokens)
        stored = self.native_attention and self._rope_table is not None
        cos, sin = (None, None) if stored else self._rope(h, positions)
        if decode:
            # Each row sees its own history only. Query heads are grouped onto their key/value head
            # ([b, kv, groups, d]) so GQA needs no repeated keys.
            # Our attention kernel takes each row's length; SDPA needs a mask unless every row sees
            # all kv_len positions (always so for one row), which the exact plan passes regardless.
            kv_lens = [p + 1 for p in starts]
            row_slots = list(range(first_slot, first_slot + b))
            mask = bias = None
            if not self.native_attention and (self.exact or min(starts) != max(starts)):
                mask = (torch.arange(kv_len, device=dev)[None, :] <= start[:, None]).view(b, 1, 1, kv_len)
                if self.small_attention:  # the mask as an additive bias for the batched products
                    bias = torch.zeros(mask.shape, dtype=self.dtype, device=dev).masked_fill_(~mask, float("-inf"))
            if b > 1 and not stored:  # where each row's new key and value go, for each kv head, in a cache's flat view
                slots = torch.arange(first_slot, first_slot + b, device=dev)
                heads = torch.arange(KV, device=dev)
                kv_rows = ((slots[:, None] * KV + heads[None, :]) * self.capacity + start[:, None]).view(-1)
        else:
            assert b == 1 and sum(lengths) == t
            offsets = [0]
            for n in lengths:
                offsets.append(offsets[-1] + n)
            mask = None
            # Several prompts, one continuing a cached prefix, or a long one attend through our kernel
            # where it runs: each token over its own slot's positions up to its own (SDPA would mask all
            # the packed tokens; a prompt's tokens go tiled, ~2x SDPA's causal kernel from 300 tokens on
            # a Zen 5). A short fresh prompt keeps SDPA: as fast there, and on an int8 cache any change
            # of rounding moves logits by ~0.2, which turned the default model's 0.05 near tie on "What
            # is the capital of France?" from "The" to "L'Étoile".
            native = self.native_attention and (len(lengths) > 1 or any(starts) or t >= TILED_FROM)
            row_slots = [first_slot + j for j, n in enumerate(lengths) for _ in range(n)]
            if native:
                kv_lens = [s + i + 1 for s, n in zip(starts, lengths) for i in range(n)]
            elif any(starts):  # some prompts continue a cached prefix: each attends over its slot
                mask = [torch.arange(s + n, device=dev)[None, :] <= torch.arange(s, s + n, device=dev)[:, None]
                        for s, n in zip(starts, lengths)]
            elif len(lengths) > 1:  # block-diagonal causal: each prompt sees only its own past
                seq_id = torch.repeat_interleave(torch.arange(len(lengths), device=dev),
                                                 torch.tensor(lengths, device=dev))
                causal = torch.ones(t, t, dtype=torch.bool, device=dev).tril_()
                mask = (causal & (seq_id[:, None] == seq_id[None, :])).view(1, 1, t, t)
        norm = self._rms_norm if self.exact else self._fused_rms_norm
        rotate = _rotate if self.exact else _rotate_fused
        body_rows, head_rows = (None, None) if decode else (PREFILL_ROWS, 1)
        qk_size = self.q_size + self.kv_size
        for i, layer in enumerate(self.layers):
            qkv = layer.qkv(h, norm_fn=norm, as_rows=body_rows)
            kc, vc = self.k[i], self.v[i]
            if stored:  # q and k rotated in place, k and v in the cache; the heads stay side by side
                lowbit.rope_store(qkv, positions, row_slots, self._rope_table, H, KV, kc, vc)
                qk = qkv.view(-1, H + 2 * KV, d)
                v = qk.narrow(1, H + KV, KV)
            else:
                # (narrow, not indexing: one op per view, this loop runs 30 times a token)
                qk = rotate(qkv.narrow(1, 0, qk_size).view(-1, H + KV, d), cos, sin)  # q and k heads rotated together
                v = qkv.narrow(1, qk_size, self.kv_size).view(-1, KV, d)
            if decode:
                if not stored and b == 1:  # one row: plain views, cheaper than an indexed write
                    kc[first_slot, :, starts[0]].copy_(qk[0, H:])
                    vc[first_slot, :, starts[0]].copy_(v[0])
                elif not stored:  # one indexed copy per cache into its flat [slots * kv heads * capacity, d] view
                    keys = qk.narrow(1, H, KV).reshape(b * KV, d)
                    kc.view(-1, d).index_copy_(0, kv_rows, keys.to(kc.dtype))
                    vc.view(-1, d).index_copy_(0, kv_rows, v.reshape(b * KV, d).to(vc.dtype))
                if self.native_attention:
                    out = lowbit.attention(qk, kc, vc, kv_lens, row_slots, H, self.scale)
                else:
                    q = qk.narrow(1, 0, H).view(b, KV, H // KV, d)
                    keys = kc.narrow(0, first_slot, b).narrow(2, 0, kv_len)
                    values = vc.narrow(0, first_slot, b).narrow(2, 0, kv_len)
                    if bias is None:  # the exact plan (transformers' arithmetic) or no mask needed
                        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scale)
                    else:  # rows of different lengths: two batched products and a softmax beat SDPA with a mask
                        scores = torch.add(bias, torch.matmul(q, keys.transpose(2, 3)), alpha=self.scale)
                        out = torch.matmul(torch.softmax(scores, -1), values)
                    out = out.view(b, self.q_size)
            else:
                if not stored:
                    self._write_prompts(kc, vc, qk.narrow(1, H, KV), v, first_slot, starts, offsets)
                if native:
                    out = lowbit.attention(qk, kc, vc, kv_lens, row_slots, H, self.scale)
                else:
                    heads = (x.transpose(0, 1).unsqueeze(0) for x in (qk[:, :H], qk.narrow(1, H, KV), v))  # [1, heads, t, d]
                    out = self._prefill_attention(kc, vc, *heads, first_slot, starts, offsets, mask)
                    out = out[0].transpose(0, 1).reshape(t, self.q_size)
            h = layer.o(out, residual=h, as_rows=body_rows)
            h = layer.down(layer.gate_up(h, norm_fn=norm, as_rows=body_rows), residual=h, glu=True, as_rows=body_rows)
        if not (decode or all_logits):
            h = h[[off - 1 for off in offsets[1:]]]
        return self.lm_head(h, norm_fn=norm, as_rows=head_rows).float().cpu()  # sampling runs on the CPU

    def _rope(self, h: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and the signed sin of `_rotate` at `positions`, shaped [tokens, 1, head_dim]."""
        if self._rope_table is not None:
            cos, sin = self._rope_table[0][positions], self._rope_table[1][positions]
        else:
            cos, sin = self.rotary(h[None], positions[None])
            cos, sin = cos[0], sin[0] * self._rope_sign
        return cos.unsqueeze(1), sin.unsqueeze(1)

    @staticmethod
    def _write_prompts(kc, vc, keys, values, first_slot, starts, offsets):
        """Write a packed prefill's keys and values [tokens, kv heads, d] into its slots (prompt j
        from position starts[j])."""
        for j, s in enumerate(starts):
            a, e = offsets[j], offsets[j + 1]
            kc[first_slot + j, :, s : s + e - a] = keys[a:e].transpose(0, 1)
            vc[first_slot + j, :, s : s + e - a] = values[a:e].transpose(0, 1)

    def _prefill_attention(self, kc, vc, q, k, v, first_slot, starts, offsets, mask):
        """A packed prefill's attention through SDPA, its keys and values already in their slots: each
        prompt over its own past, which for one continuing a cached prefix includes the positions
        copied into its slot (`mask` is then one causal mask per prompt)."""
        groups = self.n_heads // self.n_kv
        if not isinstance(mask, list):
            if kc.dtype == torch.int8:  # one fresh prompt: read back, as every other path sees them
                n = k.shape[2]
                k, v = self._read_cache(kc, first_slot, n), self._read_cache(vc, first_slot, n)
            elif kc.dtype != q.dtype:  # seen as the cache holds them, as every other path sees them
                k, v = (x.to(kc.dtype).to(q.dtype) for x in (k, v))
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.scale, enable_gqa=groups > 1
            )
        outs = []
        for j, (s, causal) in enumerate(zip(starts, mask)):
            a, e = offsets[j], offsets[j + 1]
            keys, values = (self._read_cache(c, first_slot + j, s + e - a) for c in (kc, vc))
            outs.append(F.scaled_dot_product_attention(
                q[:, :, a:e], keys, values, attn_mask=causal,
                scale=self.scale, enable_gqa=groups > 1,
            ))
        return torch.cat(outs, dim=2)

    def _read_cache(self, cache: torch.Tensor, slot: int, n: int) -> torch.Tensor:
        """The first n positions of `slot` in a key or value cache as the activations' dtype [1, kv, n, d]."""
        held = cache[slot : slot + 1, :, :n]
        return lowbit.kv_dequantize(held) if held.dtype == torch.int8 else held.to(self.dtype)

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # Same arithmetic as transformers' LlamaRMSNorm: normalise in float32, scale in model dtype.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * xf.to(x.dtype)


    def _fused_rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, weight.shape, weight, self.eps)


def _rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding as transformers computes it, x * cos + rotate_half(x) * sin, where
    rotate_half(x) = cat(-x2, x1) = roll(x, half) * sign (the sign lives in `signed_sin`)."""
    return x * cos + torch.roll(x, x.shape[-1] // 2, -1) * signed_sin


def _rotate_fused(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """`_rotate` with its multiply-add fused (one rounding fewer: not transformers' exact bits)."""
    return torch.addcmul(x * cos, torch.roll(x, x.shape[-1] // 2, -1), signed_sin)


def _main() -> int:
    """Greedy decoding through the runner vs transformers `generate`, float32, on the default model
    (or the REF given as the first argument): prints both and exits 1 if they differ."""
    import sys

    from chatloop.models.chat_format import render_prompt
    from chatloop.models.loading import load_model

    loaded = load_model(sys.argv[1] if len(sys.argv) > 1 else "default", "float32")
    ids = render_prompt(loaded.tokenizer, [{"role": "user", "content": "What is the capital of France?"}]).ids
    tokens = 32
    runner = ModelRunner(loaded.model, "float32", max_slots=1, max_len=len(ids) + tokens)
    ours = [int(runner.prefill([ids])[0].argmax())]
    while len(ours) < tokens and ours[-1] not in loaded.eos_token_ids:
        ours.append(int(runner.decode([ours[-1]])[0].argmax()))
    with torch.inference_mode():
        theirs = loaded.model.generate(torch.tensor([ids]), max_new_tokens=tokens, do_sample=False)[0, len(ids):]
    theirs = theirs.tolist()
    for name, out in (("runner", ours), ("transformers", theirs)):
        print(f"{name:>12}: {loaded.tokenizer.decode(out)!r}")
    same = ours == theirs
    print("identical token ids" if same else "token ids differ")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(_main())
