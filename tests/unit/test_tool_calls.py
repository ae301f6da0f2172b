"""The tool-call protocol: calls written into the prompt, calls parsed back out of answers."""

import json

import pytest

from chatloop.models.tool_calls import (
    HERMES,
    LLAMA3,
    MISTRAL,
    OURS,
    ToolCall,
    ToolParser,
    forced_call_schema,
    parse_forced,
    split_answer,
    tool_format,
)


def parse_calls(text: str, names: set[str]) -> tuple[str, list[ToolCall]]:
    return split_answer(ToolParser(OURS, names), text)


def test_parse_calls_keeps_only_well_formed_known_calls():
    text = 'Sure. <tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
    content, calls = parse_calls(text, {"get_weather"})
    assert content == "Sure." and [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Rome"})]
    assert calls[0].id.startswith("call_")
    assert parse_calls(text, {"other"}) == (text, [])
    broken = "<tool_call>{not json}</tool_call>"
    assert parse_calls(broken, {"get_weather"}) == (broken, [])
    deep = "<tool_call>{\"name\": \"f\", \"arguments\": " + "[" * 5000 + "]" * 5000 + "}</tool_call>"
    assert parse_calls(deep, {"f"}) == (deep, [])


def test_forced_answers_parse_or_are_left_as_text():
    assert [c.name for c in parse_forced('{"name": "f", "arguments": {"x": 1}}')] == ["f"]
    assert parse_forced('{"name": "f", "argum') == []


def test_forced_call_schema_names_each_tool():
    tools = [{"function": {"name": "a", "parameters": {"type": "object"}}}, {"function": {"name": "b"}}]
    schema = forced_call_schema(tools)
    assert [s["properties"]["name"]["const"] for s in schema["anyOf"]] == ["a", "b"]
    # a function without parameters (none, {}, or an object naming no property) takes {}, as at OpenAI
    no_arguments = {"type": "object", "properties": {}, "additionalProperties": False}
    assert [s["properties"]["arguments"] for s in schema["anyOf"]] == [no_arguments] * 2
    for parameters in ({}, {"type": "object", "properties": {}}):
        tool = {"function": {"name": "c", "parameters": parameters}}
        assert forced_call_schema([tool])["properties"]["arguments"] == no_arguments
    open_ended = {"type": "object", "additionalProperties": {"type": "integer"}}
    tool = {"function": {"name": "d", "parameters": open_ended}}
    assert forced_call_schema([tool])["properties"]["arguments"] == open_ended


def test_a_forced_array_cut_off_keeps_the_calls_it_completed():
    complete = '{"name": "get_weather", "arguments": {"city": "Rome"}}'
    cut = f'[{complete}, {complete.replace("Rome", "Oslo")}, {{"name": "get_weather", "argum'
    assert [json.loads(c.arguments) for c in parse_forced(cut)] == [{"city": "Rome"}, {"city": "Oslo"}]
    assert parse_forced('[{"name": "get_weather", "arguments": {"city": "Ro') == []
    assert parse_forced('{"name": "get_weather", "arguments": {"city": "Rome"}') == []  # one call, not an array
    assert parse_forced('[{"name": "get_weather", "arguments": NaN}, ') == []  # what is complete is still checked


def test_tool_call_renders_as_openai():
    call = ToolCall.new("f", {"x": "é"})
    assert call.as_openai() == {"id": call.id, "type": "function", "function": {"name": "f", "arguments": '{"x": "é"}'}}


# --- formats: detection, whole answers and streams ------------------------------------------------

NAMES = {"get_weather", "get_time"}
ROME = '{"name": "get_weather", "arguments": {"city": "Rome"}}'
OSLO_TIME = '{"name": "get_time", "arguments": {"tz": "Europe/Oslo"}}'

# (format, answer, expected content, expected calls as (name, arguments))
ANSWERS = [
    (HERMES, f"<tool_call>\n{ROME}\n</tool_call>", "", [("get_weather", {"city": "Rome"})]),
    (HERMES, f"Checking.\n<tool_call>\n{ROME}\n</tool_call>\n<tool_call>\n{OSLO_TIME}\n</tool_call>", "Checking.",
     [("get_weather", {"city": "Rome"}), ("get_time", {"tz": "Europe/Oslo"})]),
    (HERMES, f"```json\n{ROME}\n```", "", [("get_weather", {"city": "Rome"})]),  # tags dropped, fenced
    (HERMES, ROME, "", [("get_weather", {"city": "Rome"})]),  # tags dropped, bare
    (LLAMA3, '{"name": "get_weather", "parameters": {"city": "Rome"}}', "", [("get_weather", {"city": "Rome"})]),
    (LLAMA3, ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Rome"}}; '
              '{"name": "get_time", "parameters": {"tz": "UTC"}}'), "",
     [("get_weather", {"city": "Rome"}), ("get_time", {"tz": "UTC"})]),
    (MISTRAL, f"[TOOL_CALLS] [{ROME}, {OSLO_TIME}]", "",
     [("get_weather", {"city": "Rome"}), ("get_time", {"tz": "Europe/Oslo"})]),
    (MISTRAL, f"Sure. [TOOL_CALLS][{ROME}]", "Sure.", [("get_weather", {"city": "Rome"})]),
    (OURS, f"<tool_call>{ROME}</tool_call>", "", [("get_weather", {"city": "Rome"})]),
]


def _stream(parser: ToolParser, text: str, size: int) -> list:
    pieces = [p for i in range(0, len(text), size) for p in parser.feed(text[i:i + size])]
    return pieces + parser.finish()


def _shape(pieces: list) -> tuple[str, list]:
    return ("".join(p for p in pieces if isinstance(p, str)),
            [(p.name, json.loads(p.arguments)) for p in pieces if isinstance(p, ToolCall)])


@pytest.mark.parametrize("fmt,answer,content,calls", ANSWERS)
def test_each_format_reads_its_calls_the_same_whole_and_streamed(fmt, answer, content, calls):
    for size in (len(answer), 1, 3, 7):
        got_content, got_calls = _shape(_stream(ToolParser(fmt, NAMES), answer, size))
        assert got_calls == calls, (size, got_calls)
        assert got_content.strip() == content


@pytest.mark.parametrize("fmt", [HERMES, LLAMA3, MISTRAL, OURS])
def test_answers_without_a_valid_call_come_back_unchanged(fmt):
    answers = ["Hello there! {not json} <tool_call> [TOOL_CALLS]", "  The weather is fine.\n",
               '{"name": "unknown_tool", "arguments": {}}', "```python\nprint('hi')\n```",
               '<tool_call>{"name": "get_weather", "arguments": {"city": "Ro', '[TOOL_CALLS] [{"name": 3}]',
               '{"name": "get_weather", "arguments": {"city": "Rome"}} and some words after it']
    for answer in answers:
        for size in (len(answer), 1, 4):
            pieces = _stream(ToolParser(fmt, NAMES), answer, size)
            assert pieces and all(isinstance(p, str) for p in pieces) and "".join(pieces) == answer


def test_text_is_streamed_before_a_call_and_only_a_possible_marker_is_held():
    parser = ToolParser(HERMES, NAMES)
    assert parser.feed("Let me check the weather. <tool") == ["Let me check the weather."]
    assert parser.feed("box> is not a call") == [" <toolbox> is not a call"]
    assert parser.feed(" <tool_call>\n" + ROME[:20]) == []  # inside a call: nothing until it closes
    done = parser.feed(ROME[20:] + "\n</tool_call>")
    assert [(c.name, c.arguments) for c in done] == [("get_weather", '{"city": "Rome"}')]
    assert parser.finish() == []  # whitespace around calls is not content


def test_llama3_calls_only_open_the_answer():
    parser = ToolParser(LLAMA3, NAMES)
    assert parser.feed("  ") == []  # may still become a call
    assert parser.feed("Rome is nice. ") == ["  Rome is nice."]
    text = '{"name": "get_weather", "parameters": {"city": "Rome"}}'
    assert parser.feed(text) == [" " + text]  # after text, JSON is content
    assert parser.finish() == []


def test_template_decides_the_format(tokenizer, family_tokenizer):
    assert tool_format(tokenizer) is OURS  # SmolLM2's template knows nothing of tools
    assert tool_format(family_tokenizer("qwen2.5")) is HERMES
    assert tool_format(family_tokenizer("llama3.1")) is LLAMA3
    assert tool_format(family_tokenizer("mistral")) is MISTRAL
    assert MISTRAL.markers == ("[TOOL_CALLS]",) and LLAMA3.markers == ("<|python_tag|>",)
