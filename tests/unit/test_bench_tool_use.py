"""The tool-use benchmark's parts that need no model: its tools answer for real, its search finds each
held-out question's document, and its scoring counts what it says it counts."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from chatloop.bench import tool_use as B
from chatloop.data.tool_synthetic import heldout
from chatloop.tools.builtin import Builtins

ITEMS = {item["id"]: item for item in heldout()}
NOON = datetime(2026, 3, 1, 12, 5, tzinfo=ZoneInfo("UTC"))


def run(item, calls, final, times=()):
    return {"id": item["id"], "calls": calls, "final": final, "times": list(times),
            "offered": sorted(t["function"]["name"] for t in item["tools"])}


@pytest.mark.parametrize("item", [i for i in ITEMS.values() if i["kind"] == "search"], ids=lambda i: i["id"])
def test_search_ranks_the_questions_document_first(item):
    top = B.search(item["prompt"]).splitlines()[0]
    assert top.startswith(f"[1] {item['args']['document']} (chunk 1): ")
    assert any(e in top for e in item["expect"])


def test_tools_execute_for_real_and_errors_are_results(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    builtins = Builtins(scratch_root=tmp_path, enabled={"calculator", "current_time"})

    def execute(*args):  # the benchmark runs asyncio itself: on a thread of its own, as in its worker pool
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(B.execute, *args).result()

    assert execute(builtins, "calculator", {"expression": "(17+4)*3"}) == ("63", None)
    text, moment = execute(builtins, "current_time", {"timezone": "Asia/Bangkok"})
    local = moment.astimezone(ZoneInfo("Asia/Bangkok"))
    assert f"{local:%H:%M}" in text and "Asia/Bangkok" in text
    assert execute(builtins, "current_time", {})[0].endswith("UTC, UTC+0000)")
    for name, args in (("current_time", {"timezone": "Mars/Olympus"}), ("calculator", {"expression": "import os"}),
                       ("calculator", {"expr": "1"}), ("get_weather", {})):
        text, _ = execute(builtins, name, args)
        assert text.startswith("error: ")
    assert B.search("zebra quantum") == "No passages match the query."
    assert execute(builtins, "search_documents", {"query": "Q3 marketing budget"})[0].startswith("[1] budget-q3.txt")


def test_stray_calls_name_tools_the_parser_did_not_know():
    assert B.stray_calls('<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>') == ["get_weather"]
    assert B.stray_calls("<tool_call>{broken") == ["?"]
    assert B.stray_calls("The answer is 7.") == []
    assert B.stray_calls('{"name": "multiply", "arguments": {"a": 15}}') == ["multiply"]
    assert B.stray_calls('```json\n{"name": "calculate", "arguments": {"expression": "1"}}\n```') == ["calculate"]
    assert B.stray_calls('{"name": "search_documents", "arguments": {"query": "x"}} {"name": "calcul') == [
        "search_documents"]
    assert B.stray_calls('{"name": "calcul') == ["?"]
    assert B.stray_calls('Use {"name": ...} to call.') == []


def test_scoring_of_a_right_call_and_a_right_answer():
    item = next(i for i in ITEMS.values() if i["kind"] == "calc")
    value = item["args"]["value"]
    good = B.score(item, run(item, [{"name": "calculator", "arguments": {"expression": value + "*1"}}],
                             f"The answer is {value}."))
    assert good == {"right_tool": True, "valid_args": True, "right_args": True, "correct_answer": True,
                    "false_call": None, "not_offered": False}
    wrong_expr = B.score(item, run(item, [{"name": "calculator", "arguments": {"expression": "1+1"}}], "2"))
    assert wrong_expr["right_tool"] and wrong_expr["valid_args"] and not wrong_expr["right_args"]
    bad_args = B.score(item, run(item, [{"name": "calculator", "arguments": {"expr": value}}], value))
    assert bad_args["right_tool"] and not bad_args["valid_args"] and bad_args["correct_answer"]
    no_call = B.score(item, run(item, [], f"It is {value}."))
    assert not no_call["right_tool"] and no_call["correct_answer"] and no_call["right_args"] is False


def test_scoring_of_time_reads_the_clock_of_the_named_zone():
    item = next(i for i in ITEMS.values() if i["kind"] == "time")
    zone = item["args"]["timezone"]
    local = NOON.astimezone(ZoneInfo(zone))
    call = [{"name": "current_time", "arguments": {"timezone": zone}}]
    assert B.score(item, run(item, call, f"It's {local:%H:%M} there.", [NOON]))["correct_answer"]
    assert not B.score(item, run(item, call, "It's 25:99 there.", [NOON]))["correct_answer"]
    assert not B.score(item, run(item, [], "I don't know."))["correct_answer"]
    utc = B.score(item, run(item, [{"name": "current_time", "arguments": {"timezone": "UTC"}}], "12:05", [NOON]))
    assert utc["valid_args"] and not utc["right_args"]


def test_false_calls_and_calls_of_tools_not_offered():
    item = next(i for i in ITEMS.values() if i.get("absent"))  # calculator not offered
    called = B.score(item, run(item, [{"name": "calculator", "arguments": {"expression": "12+30"}}], ""))
    assert called["false_call"] and called["not_offered"] and not called["right_tool"]
    direct = B.score(item, run(item, [], f"That is {item['expect'][0]}."))
    assert direct["right_tool"] and not direct["false_call"] and direct["correct_answer"]
    greeting = next(i for i in ITEMS.values() if i["kind"] == "none" and not i["expect"])
    assert B.score(greeting, run(greeting, [], "Hello there!"))["correct_answer"]
    assert not B.score(greeting, run(greeting, [], "  "))["correct_answer"]


def test_summary_gives_rates_with_intervals_and_counts():
    items = [i for i in ITEMS.values() if i["kind"] == "calc"][:4]
    scores = [B.score(i, run(i, [], i["args"]["value"] if k % 2 else "no idea")) for k, i in enumerate(items)]
    summary = B.summarize(items, scores)
    assert summary["metrics"]["correct_answer"]["rate"] == 0.5 and summary["metrics"]["correct_answer"]["n"] == 4
    low, high = summary["metrics"]["correct_answer"]["ci"]
    assert 0 <= low <= 0.5 <= high <= 1
    assert summary["metrics"]["false_call"]["n"] == 0 and summary["metrics"]["false_call"]["rate"] is None


def test_a_subset_keeps_every_kind_and_both_languages():
    part = B.subset(heldout(), 4)
    assert len(part) == 16 and {i["kind"] for i in part} == {"calc", "time", "search", "none"}
    assert {i["lang"] for i in part if i["kind"] == "time"} == {"en", "zh"}
    assert B.subset(heldout(), None) == heldout()
