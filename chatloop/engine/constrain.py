"""Constrained decoding with xgrammar: outputs that must match a JSON schema (or be any JSON).

    grammars = Grammars(tokenizer, vocab_size, stop_ids)      # once per engine
    params = SamplingParams(..., grammar=grammars.json_schema(schema))

The engine gives each constrained sequence its own `GrammarMatcher`; before sampling, tokens the
grammar forbids are masked to -inf, and each sampled token advances the matcher. When the grammar
is complete the only allowed token is end-of-turn, so the answer ends exactly where the JSON does.
"""

import json
import threading

import torch

from chatloop.errors import UsageError


class Grammars:
    """Compiles (and caches) grammars for one tokenizer; safe to call from request threads."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: tuple[int, ...]):
        import xgrammar as xgr

        self._xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids))
        self._compiler = xgr.GrammarCompiler(info, max_threads=2)
        self._lock = threading.Lock()
        self.vocab_size = vocab_size

    def json_schema(self, schema: dict):
        try:
            text = json.dumps(schema)
            with self._lock:
                return self._compiler.compile_json_schema(text, any_whitespace=False)
        except (RuntimeError, ValueError, TypeError) as e:
            raise UsageError(f"invalid JSON schema: {e}") from e

    def json_object(self):
        with self._lock:
            return self._compiler.compile_builtin_json_grammar()


class Constraint:
    """Per-sequence grammar state: masks logits and follows the sampled tokens."""

    def __init__(self, compiled, vocab_size: int):
        import xgrammar as xgr

        self._xgr = xgr
        self.matcher = xgr.GrammarMatcher(compiled)
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        self.vocab_size = vocab_size

    def mask(self, logits_row: torch.Tensor) -> None:
        """In place: forbidden tokens get -inf (the row is a view into the batch's logits)."""
        self.matcher.fill_next_token_bitmask(self.bitmask, 0)
        row = logits_row.unsqueeze(0)
        self._xgr.apply_token_bitmask_inplace(row, self.bitmask, vocab_size=self.vocab_size)

    def accept(self, token: int) -> None:
        if not self.matcher.accept_token(token):
            raise RuntimeError(f"token {token} violates the grammar")  # masking makes this unreachable

    @property
    def finished(self) -> bool:
        return self.matcher.is_terminated()
