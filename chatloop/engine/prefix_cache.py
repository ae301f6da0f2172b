"""The prefix cache: KV blocks of earlier prompts and answers, reused by token prefix.

    cache = PrefixCache(budget_bytes=512 << 20, block_bytes=runner_block_bytes)
    parts = cache.match(prompt_ids, limit)      # the longest cached prefix (each [layers, 2, kv, n, d])
    cache.store(history_ids, read)              # keep what a slot's cache holds; read(start, stop) copies it

In the style of vLLM's automatic prefix caching, adapted to the runner's slot cache: a token
sequence is cut into blocks of BLOCK tokens and each block is keyed by a hash chain of token ids,
key(block i) = blake2b(key(block i-1) + tokens of block i), so one key names a whole prefix (and
its absolute positions, which rotary embeddings bake into the keys). A new request's longest run
of cached blocks is copied into its slot and only the rest of its prompt is prefilled
(runner.py). Blocks are stored after a prompt's prefill (so requests sharing a system prompt or
tool schemas reuse it at once) and when a sequence leaves its slot (its answer too, so the next
turn of a chat, whose prompt starts with this turn's prompt and answer, is prefilled from there).

Past its whole blocks a prompt also reuses part of one, as SGLang's radix cache reuses any
prefix: a sequence's last partial block is kept too (a "tail", keyed by its parent block and its
tokens), and the prompt takes the longest run of tokens it shares with any block or tail that
follows its last whole block. So the next turn of a chat prefills only its new message, not up
to 15 tokens of the last answer again, and a regenerated answer (the same prompt again) prefills
its last token only: a prompt always prefills at least its last token, whose logits pick the
first answer token (`limit`).

The budget bounds the bytes held (a tail counts as a block); eviction is least-recently-used,
leaf first: a chain's blocks are touched from its end to its root, so a shared root (the tool
schemas every request starts with) outlives the many tails that hang off it. Everything runs on
the engine thread.
"""

import hashlib
from array import array
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

BLOCK = 16  # tokens per block: whole blocks are chained by key; a prompt may then reuse part of one more


@dataclass
class _Entry:
    data: torch.Tensor  # [layers, 2, kv, n, d]
    parent: bytes  # the key of the block before it (b"" for the first)
    tokens: tuple[int, ...]  # its n tokens (a whole block's BLOCK, a tail's fewer)


def _key(parent: bytes, tokens: Sequence[int], tail: bool = False) -> bytes:
    h = hashlib.blake2b(parent, digest_size=16, person=b"tail" if tail else b"")
    h.update(array("q", tokens).tobytes())
    return h.digest()


def _shared(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens a and b share from their start."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PrefixCache:
    def __init__(self, budget_bytes: int, block_bytes: int, block: int = BLOCK):
        self.block, self.block_bytes = block, block_bytes
        self.capacity = budget_bytes // block_bytes  # blocks (tails included)
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        # what follows each key, by first token: where a prompt's partial block is looked for
        self._children: defaultdict[bytes, dict[int, set[bytes]]] = defaultdict(dict)
        self.evictions = 0

    def _chain(self, tokens: Sequence[int], n_blocks: int) -> list[bytes]:
        keys, parent = [], b""
        for b in range(n_blocks):
            parent = _key(parent, tokens[b * self.block:(b + 1) * self.block])
            keys.append(parent)
        return keys

    def match(self, tokens: Sequence[int], limit: int) -> list[torch.Tensor]:
        """The cached KV of the longest prefix of `tokens[:limit]` held: its whole blocks, in order,
        then the shared part of a block or tail that follows them."""
        keys, found = [], []
        for key in self._chain(tokens, limit // self.block):
            entry = self._entries.get(key)
            if entry is None:
                break
            keys.append(key)
            found.append(entry.data)
        at = len(found) * self.block
        rest = tokens[at:limit]
        best, shared = None, 0
        for key in self._children.get(keys[-1] if keys else b"", {}).get(rest[0], ()) if rest else ():
            n = _shared(self._entries[key].tokens, rest)
            if n > shared:
                best, shared = key, n
        if best is not None:
            keys.append(best)
            found.append(self._entries[best].data.narrow(3, 0, shared))
        self._touch(keys)
        return found

    def store(self, tokens: Sequence[int], read: Callable[[int, int], torch.Tensor]) -> int:
        """Keep the whole blocks of `tokens` and its last partial block (read(start, stop) copies those
        positions out of the slot cache; only what is not cached yet is read). A chain longer than the
        budget keeps its head. Returns the number of blocks and tails added."""
        whole = len(tokens) // self.block
        keys = self._chain(tokens, min(whole, self.capacity))
        added = 0
        parent = b""
        for i, key in enumerate(keys):
            if key not in self._entries:
                start = i * self.block
                self._add(key, _Entry(read(start, start + self.block), parent, tuple(tokens[start:start + self.block])))
                added += 1
            parent = key
        tail = tuple(tokens[whole * self.block:])
        if tail and len(keys) == whole and self.capacity > len(keys):
            key = _key(parent, tail, tail=True)
            covered = any(_shared(self._entries[k].tokens, tail) == len(tail)
                          for k in self._children.get(parent, {}).get(tail[0], ()))
            if key in self._entries or not covered:
                if key not in self._entries:
                    self._add(key, _Entry(read(whole * self.block, len(tokens)), parent, tail))
                    added += 1
                keys.append(key)
        self._touch(keys)
        while len(self._entries) > self.capacity:
            key, entry = self._entries.popitem(last=False)
            self._unlink(key, entry)
            self.evictions += 1
        return added

    def _add(self, key: bytes, entry: _Entry) -> None:
        """Hold `entry`, and drop the tails it makes redundant (those its tokens start with)."""
        for other in list(self._children.get(entry.parent, {}).get(entry.tokens[0], ())):
            held = self._entries[other].tokens
            if len(held) < self.block and len(held) < len(entry.tokens) and entry.tokens[:len(held)] == held:
                self._unlink(other, self._entries.pop(other))
        self._entries[key] = entry
        self._children[entry.parent].setdefault(entry.tokens[0], set()).add(key)

    def _unlink(self, key: bytes, entry: _Entry) -> None:
        by_token = self._children.get(entry.parent)
        if by_token is None:
            return
        siblings = by_token.get(entry.tokens[0])
        if siblings is not None:
            siblings.discard(key)
            if not siblings:
                del by_token[entry.tokens[0]]
        if not by_token:
            del self._children[entry.parent]

    def _touch(self, keys: list[bytes]) -> None:
        for key in reversed(keys):  # the root ends most recent: tails are evicted before what they hang off
            self._entries.move_to_end(key)

    def clear(self) -> None:
        self._entries.clear()
        self._children.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return len(self._entries) * self.block_bytes
