"""The prefix cache: KV blocks of earlier prompts and answers, reused by token prefix.

    cache = PrefixCache(budget_bytes=512 << 20, block_bytes=runner_block_bytes)
    blocks = cache.match(prompt_ids, limit)     # the longest cached block prefix (each [layers, 2, kv, BLOCK, d])
    cache.store(history_ids, read_block)        # keep the full blocks of what a slot's cache holds

In the style of vLLM's automatic prefix caching, adapted to the runner's slot cache: a token
sequence is cut into blocks of BLOCK tokens and each block is keyed by a hash chain of token ids,
key(block i) = blake2b(key(block i-1) + tokens of block i), so one key names a whole prefix (and
its absolute positions, which rotary embeddings bake into the keys). A new request's longest run
of cached blocks is copied into its slot and only the rest of its prompt is prefilled
(runner.py). Blocks are stored after a prompt's prefill (so requests sharing a system prompt or
tool schemas reuse it at once) and when a sequence leaves its slot (its answer too, so the next
turn of a chat, whose prompt starts with this turn's prompt and answer, is prefilled from there).

The budget bounds the bytes held; eviction is least-recently-used, leaf first: a chain's blocks
are touched from its end to its root, so a shared root (the tool schemas every request starts
with) outlives the many tails that hang off it. Everything runs on the engine thread.
"""

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

import torch

BLOCK = 16  # tokens per block: a prompt reuses its longest cached multiple of this


class PrefixCache:
    def __init__(self, budget_bytes: int, block_bytes: int, block: int = BLOCK):
        self.block, self.block_bytes = block, block_bytes
        self.capacity = budget_bytes // block_bytes  # blocks
        self._blocks: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.evictions = 0

    def _keys(self, tokens: Sequence[int], n_blocks: int) -> Iterator[bytes]:
        parent = b""
        for b in range(n_blocks):
            h = hashlib.blake2b(parent, digest_size=16)
            h.update(array("q", tokens[b * self.block:(b + 1) * self.block]).tobytes())
            parent = h.digest()
            yield parent

    def match(self, tokens: Sequence[int], limit: int) -> list[torch.Tensor]:
        """The cached blocks of the longest block prefix of `tokens[:limit]`, in order."""
        keys, found = [], []
        for key in self._keys(tokens, limit // self.block):
            blk = self._blocks.get(key)
            if blk is None:
                break
            keys.append(key)
            found.append(blk)
        self._touch(keys)
        return found

    def store(self, tokens: Sequence[int], read_block: Callable[[int], torch.Tensor]) -> int:
        """Keep the full blocks of `tokens` (read_block(i) copies block i out of the slot cache; only
        blocks not cached yet are read). A chain longer than the budget keeps its head. Returns the
        number of blocks added."""
        keys = list(self._keys(tokens, min(len(tokens) // self.block, self.capacity)))
        added = 0
        for i, key in enumerate(keys):
            if key not in self._blocks:
                self._blocks[key] = read_block(i)
                added += 1
        self._touch(keys)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)
            self.evictions += 1
        return added

    def _touch(self, keys: list[bytes]) -> None:
        for key in reversed(keys):  # the root ends most recent: tails are evicted before what they hang off
            self._blocks.move_to_end(key)

    def clear(self) -> None:
        self._blocks.clear()

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def bytes(self) -> int:
        return len(self._blocks) * self.block_bytes
