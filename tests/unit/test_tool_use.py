"""How a request uses tools: what streams at once and what is held, `parallel_tool_calls` (one call
or several, in auto and forced answers), and past calls with their results rendered by every tool
format's template."""

import json
from types import SimpleNamespace

import pytest
from conftest import run_async

from chatloop.engine.scheduler import GenerationResult
from chatloop.models.tool_calls import (
    HERMES,
    LLAMA3,
    MAX_PARALLEL_CALLS,
    MISTRAL,
    OURS,
    ToolCall,
    ToolParser,
    forced_call_schema,
    parse_forced,
    split_answer,
)
from chatloop.server.openai.protocol import ChatCompletionRequest
from chatloop.server.openai.serving import ChunkSink, chat_request
from chatloop.serving.plan import ChatRequest, Limits, ToolUse, build_plan

NAMES = {"get_weather", "get_time"}
ROME = '{"name": "get_weather", "arguments": {"city": "Rome"}}'
OSLO = '{"name": "get_weather", "arguments": {"city": "Oslo"}}'
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}


# --- what streams at once, what is held ---------------------------------------------------------------

@pytest.mark.parametrize("fmt", [OURS, HERMES, LLAMA3, MISTRAL])
def test_text_that_starts_like_content_streams_at_once(fmt):
    parser = ToolParser(fmt, NAMES)
    assert parser.feed("Hello") == ["Hello"]  # released with the very first delta
    assert parser.feed(" there, how") == [" there, how"]
    assert parser.feed(" are you? {not a call}") == [" are you? {not a call}"]
    assert parser.finish() == []


@pytest.mark.parametrize("fmt,opening", [(OURS, "<tool_call>"), (HERMES, "<tool_call>"), (HERMES, "{"),
                                         (OURS, "{"), (LLAMA3, "{"), (LLAMA3, "<|python_tag|>")])
def test_an_answer_that_opens_like_a_call_is_held_until_decided(fmt, opening):
    body = ROME.replace("arguments", "parameters") if fmt is LLAMA3 else ROME
    tail = "</tool_call>" if opening == "<tool_call>" else ""
    text = opening + body if opening != "{" else body
    for i in range(1, len(text)):  # every prefix of the call is held
        parser = ToolParser(fmt, NAMES)
        assert parser.feed(text[:i]) == [], text[:i]
    parser = ToolParser(fmt, NAMES)
    pieces = parser.feed(text + tail) + parser.finish()
    assert [(p.name, json.loads(p.arguments)) for p in pieces] == [("get_weather", {"city": "Rome"})]
    # decided the other way: what was held comes back as the text it was
    parser = ToolParser(fmt, NAMES)
    assert parser.feed(text[:8]) == []
    assert "".join(parser.feed(" is not a call") + parser.finish()) == text[:8] + " is not a call"


def test_a_marker_split_over_deltas_is_held_only_as_long_as_it_may_be_one():
    parser = ToolParser(HERMES, NAMES)
    assert parser.feed("Sure <tool") == ["Sure"]
    assert parser.feed("_cal") == []
    assert parser.feed("l>" + ROME) == []
    [call] = parser.feed("</tool_call>")
    assert call.name == "get_weather"


# --- parallel_tool_calls ------------------------------------------------------------------------------

SINGLE_ANSWERS = [
    (HERMES, f"Checking. <tool_call>{ROME}</tool_call> and <tool_call>{OSLO}</tool_call> then more words"),
    (HERMES, f"{ROME}\n{OSLO}"),
    (LLAMA3, f"<|python_tag|>{ROME}; {OSLO}"),
    (MISTRAL, f"[TOOL_CALLS] [{ROME}, {OSLO}]"),
    (OURS, f"<tool_call>{ROME}</tool_call><tool_call>{OSLO}</tool_call>"),
]


@pytest.mark.parametrize("fmt,answer", SINGLE_ANSWERS)
def test_without_parallel_calls_an_auto_answer_ends_at_its_first_call(fmt, answer):
    for size in (len(answer), 1, 5):
        parser = ToolParser(fmt, NAMES, single=True)
        pieces = [p for i in range(0, len(answer), size) for p in parser.feed(answer[i:i + size])] + parser.finish()
        calls = [p for p in pieces if isinstance(p, ToolCall)]
        assert [json.loads(c.arguments) for c in calls] == [{"city": "Rome"}], (size, pieces)
        content = "".join(p for p in pieces if isinstance(p, str))
        assert content == ("Checking." if answer.startswith("Checking") else "")
    parallel = split_answer(ToolParser(fmt, NAMES), answer)[1]
    assert [json.loads(c.arguments)["city"] for c in parallel] == ["Rome", "Oslo"]


def test_forced_schema_is_one_call_or_a_bounded_array_of_calls():
    single = forced_call_schema([WEATHER, TIME])
    assert [s["properties"]["name"]["const"] for s in single["anyOf"]] == ["get_weather", "get_time"]
    several = forced_call_schema([WEATHER, TIME], parallel=True)
    assert several == {"type": "array", "items": single, "minItems": 1, "maxItems": MAX_PARALLEL_CALLS}
    calls = parse_forced(f"[{ROME}, {OSLO}]")
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Rome"}),
                                                                 ("get_weather", {"city": "Oslo"})]
    assert len({c.id for c in calls}) == 2
    assert parse_forced("[]") == [] and parse_forced('[{"name": "x"}]') == []
    # an array cut off (max_tokens) keeps the calls it completed
    assert [c.name for c in parse_forced(f"[{ROME}, ")] == ["get_weather"]
    assert [c.name for c in parse_forced(ROME)] == ["get_weather"]


def chat(**kw) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER, TIME], max_tokens=4, **kw)


def test_the_plan_follows_parallel_tool_calls(tiny_engine):
    limits = Limits()
    required = build_plan(tiny_engine, chat(tool_choice="required"), limits).tools
    assert required.parallel and required.schema()["type"] == "array"
    one = build_plan(tiny_engine, chat(tool_choice="required", parallel_tool_calls=False), limits).tools
    assert not one.parallel and "anyOf" in one.schema()
    named = build_plan(tiny_engine, chat(tool_choice="get_time"), limits).tools
    assert not named.parallel and named.schema()["properties"]["name"] == {"const": "get_time"}
    auto = build_plan(tiny_engine, chat(parallel_tool_calls=False), limits).tools
    assert auto.mode == "auto" and not auto.parallel
    content, calls = auto.extract(f"<tool_call>{ROME}</tool_call><tool_call>{OSLO}</tool_call>")
    assert content is None and len(calls) == 1
    content, calls = required.extract(f"[{ROME}, {OSLO}]")
    assert content is None and len(calls) == 2


def test_v1_maps_parallel_tool_calls_with_openais_default():
    def mapped(**kw):
        return chat_request(ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], **kw))

    assert mapped().parallel_tool_calls is True
    assert mapped(parallel_tool_calls=True).parallel_tool_calls is True
    assert mapped(parallel_tool_calls=False).parallel_tool_calls is False


async def _no_log(results, status):
    return None


def test_a_stream_without_parallel_calls_sends_one_call_and_finishes_with_tool_calls():
    answer = f"Let me look. <tool_call>{ROME}</tool_call> Also: <tool_call>{OSLO}</tool_call>"
    sink = ChunkSink("chatcmpl-1", "m", 1, ToolUse("auto", frozenset(NAMES), (), HERMES, parallel=False),
                     include_usage=False, log_usage=_no_log)
    chunks = list(sink.start())
    for i in range(0, len(answer), 4):
        chunks += sink.delta(0, answer[i:i + 4])
    result = GenerationResult(text=answer, token_ids=[], finish_reason="stop", prompt_tokens=3, completion_tokens=9,
                              model="m", ttft_s=0.1, latency_s=0.2)
    chunks += sink.finish(0, result)
    chunks += run_async(sink.end([result], False))
    events = [json.loads(c[len("data: "):]) for c in chunks if c.startswith("data: {")]
    deltas = [e["choices"][0] for e in events if e["choices"]]
    assert "".join(d["delta"].get("content") or "" for d in deltas) == "Let me look."
    calls = [tc for d in deltas for tc in d["delta"].get("tool_calls") or []]
    assert {tc["index"] for tc in calls} == {0} and calls[0]["function"]["name"] == "get_weather"
    assert json.loads("".join(tc["function"]["arguments"] or "" for tc in calls)) == {"city": "Rome"}
    assert [d["finish_reason"] for d in deltas if d["finish_reason"]] == ["tool_calls"]


# --- past calls and their results, in every format ------------------------------------------------------

HISTORY = [
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_7", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
    {"role": "tool", "tool_call_id": "call_7", "name": "get_weather", "content": "18 C and sunny"},
]
# family -> (how the template writes the past call, how it writes the tool's result)
RENDERED = {
    "qwen2.5": ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
                "<tool_response>\n18 C and sunny\n</tool_response>"),
    "llama3.1": ('{"name": "get_weather", "parameters": {"city": "Oslo"}}',
                 "<|start_header_id|>ipython<|end_header_id|>\n\n18 C and sunny"),
    "mistral": ('[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Oslo"}}]',
                '[TOOL_RESULTS] {"content": "18 C and sunny"}[/TOOL_RESULTS]'),
    "ours": ('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>',
             "<|im_start|>tool\n18 C and sunny<|im_end|>"),
}


@pytest.mark.parametrize("family", list(RENDERED))
def test_past_calls_and_tool_results_from_v1_reach_every_formats_prompt(family, tokenizer, family_tokenizer):
    tok = tokenizer if family == "ours" else family_tokenizer(family)
    engine = SimpleNamespace(tokenizer=tok, max_len=4096, model_id=f"{family}:test")
    request = chat_request(ChatCompletionRequest(model="m", messages=HISTORY, tools=[WEATHER], max_tokens=8))
    assert request.messages[2]["tool_call_id"] == "call_7" and request.messages[2]["name"] == "get_weather"
    prompt = tok.decode(build_plan(engine, request, Limits()).prompt_ids)
    call, result = RENDERED[family]
    assert call in prompt and result in prompt, prompt
    assert prompt.index(call) < prompt.index(result)
