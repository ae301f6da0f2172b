"""Synthetic tool-use conversations: real results, only offered tools, deterministic, and a held-out
set that shares nothing with training (nor the browser test's prompt)."""

import json
import re
import tempfile
from collections import Counter
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from chatloop.data import tool_pools as P
from chatloop.data import tool_synthetic as T
from chatloop.data.schemas import read_dataset, validate_row
from chatloop.errors import UsageError
from chatloop.tools.base import CallContext
from chatloop.tools.calculator import calculate

ROWS = list(T.generate(1500, seed=0))


def _calls(row):
    return [c for m in row["messages"] for c in m.get("tool_calls", [])]


def test_same_seed_same_rows_and_another_seed_differs():
    assert list(T.generate(50, seed=0)) == ROWS[:50]
    assert list(T.generate(50, seed=1)) != ROWS[:50]
    assert T.heldout() == T.heldout()


def test_every_row_is_a_valid_sft_row_that_calls_only_offered_tools():
    for row in ROWS:
        checked = validate_row(row, "sft")
        assert checked["tools"] == row["tools"]
        offered = {t["function"]["name"] for t in row["tools"]}
        assert {c["function"]["name"] for c in _calls(row)} <= offered
        assert row["messages"][-1]["role"] == "assistant" and row["messages"][-1]["content"]
    assert all(t in T.TOOLS.values() for row in ROWS for t in row["tools"])


def _exchanges(row):
    """(offered tool names, [messages of one question and what follows it]) per question."""
    out, offered = [], {t["function"]["name"] for t in row["tools"]}
    for m in row["messages"]:
        if m["role"] == "user":
            out.append([])
        if out:
            out[-1].append(m)
    return [(offered, ex) for ex in out]


def test_kinds_languages_and_tool_subsets_are_all_present():
    called = Counter(c["function"]["name"] for row in ROWS for c in _calls(row))
    assert all(called[name] > 150 for name in T.TOOLS)
    exchanges = [e for row in ROWS for e in _exchanges(row)]
    no_call = [(offered, ex) for offered, ex in exchanges if len(ex) == 2]
    assert 0.4 < len(no_call) / len(exchanges) < 0.6  # about half the questions need no call (WEIGHTS)
    assert Counter(len(row["tools"]) for row in ROWS).keys() == {1, 2, 3}
    assert Counter(len(_exchanges(row)) for row in ROWS).keys() == {1, 2, 3, 4}
    assert any("\u4e00" <= ch <= "\u9fff" for row in ROWS[:20] for ch in row["messages"][-1]["content"])
    # a needed tool that is not offered: no call, and a "cannot" (or, for arithmetic, the answer)
    cannot = {text: kind for kind, langs in P.CANNOT.items() for texts in langs.values() for text in texts}
    absent = [(offered, ex) for offered, ex in no_call if ex[1]["content"] in cannot]
    assert len(absent) > 30
    assert all(T.NEEDS[cannot[ex[1]["content"]]] not in offered for offered, ex in absent)


def test_tool_results_are_real_and_final_answers_state_them():
    seen = Counter()
    for row in ROWS:
        ms = row["messages"]
        for i, m in enumerate(ms):
            for call in m.get("tool_calls", []):
                name, args = call["function"]["name"], json.loads(call["function"]["arguments"])
                result, final = ms[i + 1]["content"], ms[i + 2]["content"]
                assert ms[i + 1]["role"] == "tool"
                if name == "calculator":
                    assert result == calculate(args["expression"])
                    assert result in final
                elif name == "current_time":
                    assert f", {args['timezone']}, UTC" in result and result[11:16] in final
                else:
                    cited = int(final.rsplit("[", 1)[1].rstrip("]"))
                    snippet = result.splitlines()[cited - 1]
                    assert snippet.startswith(f"[{cited}] ") and snippet.split('"')[1] in final
                seen[name] += 1
    assert len(seen) == 3


def test_the_browser_prompt_is_in_neither_set():
    prompts = {m["content"] for row in T.generate(4000, seed=0) for m in row["messages"] if m["role"] == "user"}
    assert T.BROWSER_PROMPT not in prompts
    assert T.BROWSER_PROMPT not in {item["prompt"] for item in T.heldout()}
    # ...but its shape (eat some, buy more) is taught, with other numbers and wording
    assert any("吃了" in p and "又买了" in p for p in prompts)


def test_heldout_is_balanced_and_disjoint_from_training():
    items = T.heldout()
    assert len(items) == 60
    assert Counter(i["kind"] for i in items) == {"calc": 15, "time": 15, "search": 15, "none": 15}
    assert Counter(i["lang"] for i in items) == {"en": 30, "zh": 30}
    train_prompts = {m["content"] for row in ROWS for m in row["messages"] if m["role"] == "user"}
    assert not train_prompts & {i["prompt"] for i in items}
    assert not {z for *_, z in P.TRAIN.cities} & {z for *_, z in P.HELDOUT.cities}
    for lang in ("en", "zh"):
        assert not set(P.TRAIN.names[lang]) & set(P.HELDOUT.names[lang])
        assert not {q["q"] for q in P.TRAIN.word[lang]} & {q["q"] for q in P.HELDOUT.word[lang]}
        assert not set(P.TRAIN.time_q[lang]) & set(P.HELDOUT.time_q[lang])
        assert not {q for q, _ in P.TRAIN.plain[lang]} & {q for q, _ in P.HELDOUT.plain[lang]}
    for item in items:
        offered = {t["function"]["name"] for t in item["tools"]}
        if item["tool"]:
            assert item["tool"] in offered
        if item.get("absent"):
            assert "calculator" not in offered and item["tool"] is None
        if item["kind"] == "calc":
            assert item["expect"] == [item["args"]["value"]] and Fraction(item["args"]["value"]).denominator == 1


def test_offered_tools_are_the_servers_builtins_and_results_their_format():
    from conftest import run_async  # asyncio on a thread of its own (a browser test may hold this thread's loop)

    from chatloop.tools.builtin import Builtins
    from chatloop.tools.retrieval import SPEC

    assert T.TOOLS["search_documents"] == SPEC.openai()
    with tempfile.TemporaryDirectory() as scratch:
        builtins = Builtins(scratch_root=Path(scratch))
        specs = {s.name: s.openai() for s in run_async(builtins.list_tools())}
        assert T.TOOLS["calculator"] == specs["calculator"] and T.TOOLS["current_time"] == specs["current_time"]
        real = run_async(builtins.call("current_time", {"timezone": "Asia/Tokyo"}, CallContext())).text
    ours = T.time_result("Asia/Tokyo", datetime(2025, 5, 6, 1, 2, 3, tzinfo=ZoneInfo("UTC")))
    assert ours == "2025-05-06T10:02:03+09:00 (Tuesday, Asia/Tokyo, UTC+0900)"
    shape = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+09:00 \(\w+, Asia/Tokyo, UTC\+0900\)$")
    assert shape.match(real) and shape.match(ours)
    text = T.snippets([("a.txt", "Alpha."), ("b.txt", "Beta.")])
    assert text.splitlines()[:2] == ['[1] a.txt (chunk 1): "Alpha."', '[2] b.txt (chunk 1): "Beta."']


def test_materialize_writes_once_and_checks_the_spec(tmp_path):
    path = T.materialize("synthetic:tools:30:mix:4", tmp_path)
    rows = read_dataset(path, "sft")
    assert len(rows) == 30 and all("tools" in r for r in rows)
    assert T.materialize("synthetic:tools:30:mix:4", tmp_path) == path
    for bad in ("synthetic:tools:x", "synthetic:sft:3", "synthetic:tools:3:en"):
        with pytest.raises(UsageError):
            T.materialize(bad, tmp_path)


def test_sft_schema_refuses_calls_of_tools_not_offered_and_malformed_tools():
    row = json.loads(json.dumps(next(r for r in ROWS if _calls(r))))
    name = _calls(row)[0]["function"]["name"]
    row["tools"] = [t for t in T.TOOLS.values() if t["function"]["name"] != name]
    with pytest.raises(ValueError, match="do not offer"):
        validate_row(row, "sft")
    with pytest.raises(ValueError, match="function"):
        validate_row({**row, "tools": ["calculator"]}, "sft")
    with pytest.raises(ValueError, match="non-empty"):
        validate_row({**row, "tools": []}, "sft")
    plain = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    assert validate_row(plain, "sft") == plain  # rows without tools are unchanged


def test_stage_configs_name_tool_conversations_as_a_synthetic_spec(tmp_path):
    """`synthetic:tools:N:mix:SEED` in a stage config (configs/tools/*.yaml) writes the tool rows."""
    from chatloop.train.common import expand_data

    [path] = expand_data(["synthetic:tools:12:mix:3"], tmp_path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 12 and all(row["tools"] and row["messages"] for row in rows)
    assert rows == list(T.generate(12, 3))
