"""JSONL dataset schemas, one JSON object per line, validated with errors naming file, line, field.

    text  {"text": "a document"}                                   pretraining / tokenizer corpora
    sft   {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
          optional "tools": [OpenAI function definitions] offered in that conversation; its assistant
          `tool_calls` and `tool` results are then kept for the template to render (tool rows)
    pairs {"prompt": [messages...], "chosen": {"role": "assistant", "content": "..."},
           "rejected": {"role": "assistant", "content": "..."}}             reward model and DPO
    kto   {"prompt": [messages...], "completion": {"role": "assistant", "content": "..."},
           "label": true}                                                  thumbs up (true) / down
    prompts {"prompt": [messages...], "answer": "42"}        GRPO; `answer` optional (exact-answer reward)

Messages follow the OpenAI shape checked by `chatloop.models.chat_format.normalize_messages`.
Plain `.txt` files are also accepted as text corpora: documents separated by blank lines.

    rows = read_dataset(Path("data.jsonl"), "sft")   # list of validated dicts, or UsageError
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatloop.errors import UsageError
from chatloop.models.chat_format import normalize_messages

KINDS = ("text", "sft", "pairs", "kto", "prompts")


class RowError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _messages(row: dict, field: str, keep_calls: bool = False) -> list[dict]:
    try:
        return normalize_messages(row.get(field), keep_calls=keep_calls)
    except UsageError as e:
        raise RowError(field, str(e)) from e


def _tools(row: dict) -> list[dict]:
    tools = row["tools"]
    if not isinstance(tools, list) or not tools:
        raise RowError("tools", "must be a non-empty list of function definitions")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type") != "function" or not isinstance(fn.get("name"), str) \
                or not isinstance(fn.get("parameters", {}), dict):
            raise RowError(f"tools[{i}]", "must be {\"type\": \"function\", \"function\": {\"name\": ..., "
                                          "\"parameters\": {JSON schema}}}")
    return tools


def _assistant(row: dict, field: str) -> dict:
    value = row.get(field)
    if not isinstance(value, dict) or value.get("role") != "assistant" or not isinstance(value.get("content"), str):
        raise RowError(field, "must be a message {\"role\": \"assistant\", \"content\": \"...\"}")
    return {"role": "assistant", "content": value["content"]}


def _prompt(row: dict) -> list[dict]:
    prompt = _messages(row, "prompt")
    if prompt[-1]["role"] != "user":
        raise RowError("prompt", "must end with a user message")
    return prompt


def _text(row: dict) -> dict:
    if not isinstance(row.get("text"), str) or not row["text"]:
        raise RowError("text", "must be a non-empty string")
    return {"text": row["text"]}


def _sft(row: dict) -> dict:
    with_tools = "tools" in row
    messages = _messages(row, "messages", keep_calls=with_tools)
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError("messages", "needs at least one assistant message to train on")
    if not with_tools:
        return {"messages": messages}
    tools = _tools(row)
    offered = {t["function"]["name"] for t in tools}
    for i, m in enumerate(messages):
        for call in m.get("tool_calls", []):
            if call["function"]["name"] not in offered:
                raise RowError(f"messages[{i}]", f"calls {call['function']['name']!r}, which the row's tools "
                                                 "do not offer")
    return {"messages": messages, "tools": tools}


def _pairs(row: dict) -> dict:
    return {"prompt": _prompt(row), "chosen": _assistant(row, "chosen"), "rejected": _assistant(row, "rejected")}


def _kto(row: dict) -> dict:
    if not isinstance(row.get("label"), bool):
        raise RowError("label", "must be true (thumbs up) or false (thumbs down)")
    return {"prompt": _prompt(row), "completion": _assistant(row, "completion"), "label": row["label"]}


def _prompts(row: dict) -> dict:
    answer = row.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise RowError("answer", "must be a string when present")
    return {"prompt": _prompt(row), "answer": answer}


VALIDATORS: dict[str, Callable[[dict], dict]] = {
    "text": _text, "sft": _sft, "pairs": _pairs, "kto": _kto, "prompts": _prompts,
}


def validate_row(row: Any, kind: str) -> dict:
    if not isinstance(row, dict):
        raise RowError("", "each line must be a JSON object")
    return VALIDATORS[kind](row)


def detect_kind(path: Path) -> str:
    """`sft` for a JSONL file whose first row has `messages`, else `text` (for mixed corpora)."""
    if path.suffix != ".jsonl":
        return "text"
    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    try:
        row = json.loads(first)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}:1: not valid JSON: {e.msg} (column {e.colno})") from e
    return "sft" if isinstance(row, dict) and "messages" in row else "text"


def read_texts(path: Path, render: Callable[[list[dict]], str]) -> list[str]:
    """Documents of a text corpus, or conversations of an sft file rendered by `render`."""
    kind = detect_kind(path)
    rows = read_dataset(path, kind)
    return [row["text"] for row in rows] if kind == "text" else [render(row["messages"]) for row in rows]


def read_dataset(path: Path, kind: str) -> list[dict]:
    """Every row of a JSONL file (or, for kind text, a .txt file), validated."""
    if kind not in VALIDATORS:
        raise UsageError(f"unknown dataset kind '{kind}': choose one of {', '.join(KINDS)}")
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read dataset {path}: {e}") from e
    if kind == "text" and path.suffix != ".jsonl":
        return [{"text": doc.strip()} for doc in raw.split("\n\n") if doc.strip()]
    rows = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(validate_row(json.loads(line), kind))
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{lineno}: not valid JSON: {e.msg} (column {e.colno})") from e
        except RowError as e:
            where = f" field '{e.field}':" if e.field else ""
            raise UsageError(f"{path}:{lineno}:{where} {e}") from e
    if not rows:
        raise UsageError(f"dataset {path} has no rows")
    return rows
