"""Constrained decoding with xgrammar: outputs that must match a JSON schema (or be any JSON).

    grammars = Grammars(tokenizer, vocab_size, stop_ids)      # once per engine
    params = SamplingParams(..., grammar=grammars.json_schema(schema))

The engine gives each constrained sequence its own `GrammarMatcher`; before sampling, tokens the
grammar forbids are masked to -inf, and each sampled token advances the matcher. When the grammar
is complete the only allowed token is end-of-turn, so the answer ends exactly where the JSON does.

A schema is checked before any request is queued: one that xgrammar cannot compile, or that no
finite JSON value satisfies (`{"$ref": "#"}`, definitions that only refer to each other, a
required property whose schema is such a cycle) is refused with a UsageError naming the problem.
Should a grammar still dead-end mid-answer, `Constraint.mask` raises GrammarDeadEnd and only that
sequence ends.
"""

import json
import threading

import torch

from chatloop.errors import UsageError


class GrammarDeadEnd(UsageError):
    """The grammar allows no next token: the schema has no finite value along this path."""


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
        """A compiled grammar for `schema`; UsageError if it cannot be compiled or has no finite value."""
        problem = unsatisfiable(schema)
        if problem:
            raise UsageError(f"invalid JSON schema: {problem}")
        try:
            text = json.dumps(schema)
            with self._lock:
                compiled = self._compiler.compile_json_schema(text, any_whitespace=False)
        except (RuntimeError, ValueError, TypeError, RecursionError) as e:
            raise UsageError(f"invalid JSON schema: {_short(e)}") from e
        if not self._can_start(compiled):
            raise UsageError("invalid JSON schema: no JSON value satisfies it (a $ref cycle without a base case?)")
        return compiled

    def json_object(self):
        with self._lock:
            return self._compiler.compile_builtin_json_grammar()

    def _can_start(self, compiled) -> bool:
        matcher = self._xgr.GrammarMatcher(compiled)
        bitmask = self._xgr.allocate_token_bitmask(1, self.vocab_size)
        matcher.fill_next_token_bitmask(bitmask, 0)
        return bool(bitmask.any())


def _short(e: Exception) -> str:
    """xgrammar's messages start with a C++ source location; keep the part a user can act on."""
    text = str(e).strip()
    return text.split(": ", 1)[1] if text.startswith("[") and ": " in text else text


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
        if not self.bitmask.any():
            raise GrammarDeadEnd("the requested JSON format allows no continuation here (its schema has no "
                                 "finite value along this path)")
        row = logits_row.unsqueeze(0)
        self._xgr.apply_token_bitmask_inplace(row, self.bitmask, vocab_size=self.vocab_size)

    def accept(self, token: int) -> None:
        if not self.matcher.accept_token(token):
            raise GrammarDeadEnd(f"token {token} violates the requested JSON format")

    @property
    def finished(self) -> bool:
        return self.matcher.is_terminated()


# --- which schemas have a finite value -------------------------------------------------------------

def unsatisfiable(schema) -> str | None:
    """Why no finite JSON value can satisfy `schema` because of local `$ref` cycles, else None.

    A least fixpoint over the schema's nodes: a node is *productive* once some finite value is
    known for it (primitives, enums, objects whose required properties are productive, arrays
    that may be empty or whose items are productive, anyOf/oneOf with a productive branch, allOf
    whose parts all are, a $ref whose target is). Other constraints are left to xgrammar.
    """
    nodes: list[dict] = []
    seen: set[int] = set()
    stack = [schema]
    while stack:  # iterative: a deeply nested schema must not exhaust Python's recursion limit
        node = stack.pop()
        if isinstance(node, dict) and id(node) not in seen:
            seen.add(id(node))
            nodes.append(node)
            for value in node.values():
                stack.extend(value if isinstance(value, list) else [value])
    productive: set[int] = set()

    def ok(node) -> bool:
        if not isinstance(node, dict):
            return node is not False
        return id(node) in productive

    def deps_ok(node: dict) -> bool:
        if "$ref" in node:
            target = _resolve_local(schema, node["$ref"])
            if target is not None and not ok(target):
                return False
        for key in ("anyOf", "oneOf"):
            if isinstance(node.get(key), list) and node[key] and not any(ok(c) for c in node[key]):
                return False
        if isinstance(node.get("allOf"), list) and not all(ok(c) for c in node["allOf"]):
            return False
        props = node.get("properties") if isinstance(node.get("properties"), dict) else {}
        required = node.get("required") if isinstance(node.get("required"), list) else []
        for name in required:
            if isinstance(name, str) and name in props and not ok(props[name]):
                return False
        if isinstance(node.get("minItems"), int) and node["minItems"] > 0:
            items = node.get("prefixItems") if isinstance(node.get("prefixItems"), list) else []
            needed = items[: node["minItems"]]
            if len(needed) < node["minItems"] and "items" in node:
                needed = needed + [node["items"]]
            if not all(ok(c) for c in needed):
                return False
        return True

    changed = True
    while changed:
        changed = False
        for node in nodes:
            if id(node) not in productive and deps_ok(node):
                productive.add(id(node))
                changed = True
    if ok(schema):
        return None
    cycle = next((n["$ref"] for n in nodes if "$ref" in n and not ok(n)), None)
    where = f" (the $ref '{cycle}' never reaches one)" if cycle else ""
    return f"no finite JSON value satisfies it{where}"


def _resolve_local(root, ref):
    """The node a local JSON pointer ('#', '#/$defs/x') names; None for anything else."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node
