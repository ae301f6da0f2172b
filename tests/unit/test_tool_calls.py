"""The tool-call protocol: calls written into the prompt, calls parsed back out of answers."""

import json

from chatloop.models.tool_calls import ToolCall, forced_call_schema, parse_calls, parse_forced


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
    assert forced_call_schema(tools[:1])["properties"]["arguments"] == {"type": "object"}


def test_tool_call_renders_as_openai():
    call = ToolCall.new("f", {"x": "é"})
    assert call.as_openai() == {"id": call.id, "type": "function", "function": {"name": "f", "arguments": '{"x": "é"}'}}
