"""Streaming text out of token ids: UTF-8-safe incremental detokenisation and stop strings.

Byte-level BPE tokens can split a multibyte character (Chinese, emoji) across tokens; decoding
such a prefix yields U+FFFD. The detokenizer holds text back until the character is complete.
The stop matcher holds back the tail that could still become a stop string, so a client never
sees text that is later retracted.

Special tokens (end of turn, padding) are dropped from the text, except those the model's
tool-call format writes its calls with (`<|python_tag|>`, `[TOOL_CALLS]`, Qwen's `<tool_call>`
where a tokenizer marks it special): `skipped_ids` names the ones to drop.

`TokenPieces` gives one token's own text and bytes, as OpenAI's logprobs report them.
"""

import functools


def skipped_ids(tokenizer, keep: tuple[str, ...] = ()) -> frozenset[int]:
    """Ids of the special tokens left out of decoded text: the tokenizer's special tokens and
    added tokens marked special, less the tokens spelled as in `keep`."""
    special = set(tokenizer.all_special_ids)
    special.update(i for i, t in tokenizer.added_tokens_decoder.items() if t.special)
    kept = {i for i, t in tokenizer.added_tokens_decoder.items() if t.content in keep}
    return frozenset(special - kept)


class IncrementalDetokenizer:
    """Text deltas for a growing list of token ids (the prefix/read offsets scheme of vLLM/TGI)."""

    def __init__(self, tokenizer, skipped: frozenset[int] | None = None):
        self.tokenizer = tokenizer
        self.skipped = skipped_ids(tokenizer) if skipped is None else skipped
        self.ids: list[int] = []
        self.prefix = 0  # decode from here, so that tokenizers see context for leading spaces
        self.read = 0  # text of ids[:read] has been returned

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i not in self.skipped], skip_special_tokens=False)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end of generation, minus an unfinished character
        (generation cut off in the middle of a multibyte character must not emit U+FFFD)."""
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before) :].rstrip("\ufffd")


class StopMatcher:
    """Accumulates text, finds the earliest stop string, and releases only text that is final."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.longest = max((len(s) for s in stops), default=0)
        self.text = ""
        self.emitted = 0

    def feed(self, delta: str) -> tuple[str, bool]:
        """Returns (text safe to emit now, whether a stop string was reached)."""
        if not self.stops:
            self.text += delta
            self.emitted = len(self.text)
            return delta, False
        search_from = max(0, len(self.text) - self.longest + 1)
        self.text += delta
        hits = [i for i in (self.text.find(s, search_from) for s in self.stops) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            return self._release(len(self.text)), True
        return self._release(len(self.text) - self._held()), False

    def _held(self) -> int:
        """The length of the longest end of the text that begins a stop string (held back: the next
        tokens may complete it). Only places where a stop string's first character occurs are
        tried, from the earliest: a stop string of 250,000 characters had taken ~40 ms a token,
        each of its prefixes copied and compared, while the engine's other sequences waited."""
        tail = self.text[-(self.longest - 1):] if self.longest > 1 else ""
        held = 0
        for s in self.stops:
            at = tail.find(s[0], max(0, len(tail) - len(s) + 1))
            while at != -1 and len(tail) - at > held:
                if s.startswith(tail[at:]):
                    held = len(tail) - at
                    break
                at = tail.find(s[0], at + 1)
        return held

    def finish(self) -> str:
        return self._release(len(self.text))

    def _release(self, end: int) -> str:
        out = self.text[self.emitted : end]
        self.emitted = max(self.emitted, end)
        return out


@functools.cache
def _byte_level() -> dict[str, int]:
    """Byte-level BPE's alphabet (GPT-2's bytes_to_unicode) inverted: the character a vocabulary
    writes for each byte -> that byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class TokenPieces:
    """One token's text and bytes (`{"token", "bytes"}`, as in OpenAI's logprobs): the bytes of a
    byte-level BPE token (GPT-2, Llama 3, Qwen, SmolLM), or of a SentencePiece one (`▁` a space,
    `<0x0A>` a byte), else of its decoded text. A token that is part of a multibyte character is
    not text alone: its `token` is then written as OpenAI writes it, `bytes:\\xe4\\xbd`."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special = {i: t.content for i, t in tokenizer.added_tokens_decoder.items()}
        self.known: dict[int, dict] = {}  # at most the vocabulary
        # byte-level BPE writes bytes as characters of its alphabet; a SentencePiece piece is text
        # (plain "é" is a character there, while byte-level "é" is the byte 0xE9)
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self.byte_level = (b'"ByteLevel"' in decoder.__getstate__() if decoder is not None
                           else hasattr(tokenizer, "byte_decoder"))

    def raw(self, token_id: int) -> bytes:
        if token_id in self.special:
            return self.special[token_id].encode()
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if piece is None:
            return b""
        alphabet = _byte_level()
        if self.byte_level and all(c in alphabet for c in piece):
            return bytes(alphabet[c] for c in piece)
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return bytes([int(piece[3:5], 16)])
        return piece.replace("\u2581", " ").encode()

    def __call__(self, token_id: int) -> dict:
        """{"token", "bytes"} (shared: not to be modified)."""
        if token_id not in self.known:
            raw = self.raw(token_id)
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                text = "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
            self.known[token_id] = {"token": text, "bytes": list(raw)}
        return self.known[token_id]
