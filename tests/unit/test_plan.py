"""The request plan: one place decides the prompt, the budget, the sampling parameters and how tools
are used (tiny model: a 512-token context)."""

import pytest

from chatloop.errors import ContextTooLongError, UsageError
from chatloop.models.chat_format import render_prompt
from chatloop.serving.plan import ChatRequest, Limits, build_plan

HELLO = [{"role": "user", "content": "Say hello"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def chat(**kw) -> ChatRequest:
    return ChatRequest(**{"messages": HELLO, **kw})


def test_the_prompt_is_the_rendered_conversation(tiny_engine):
    plan = build_plan(tiny_engine, chat(max_tokens=5), Limits())
    assert plan.prompt_ids == render_prompt(tiny_engine.tokenizer, HELLO).ids
    assert plan.model_id == "tiny-llama:test" and plan.max_tokens == 5 and plan.dropped == 0


def test_without_max_tokens_the_server_default_applies_clipped_to_the_room_left(tiny_engine):
    prompt = len(render_prompt(tiny_engine.tokenizer, HELLO).ids)
    assert build_plan(tiny_engine, chat(), Limits(default_max_tokens=16)).max_tokens == 16
    assert build_plan(tiny_engine, chat(), Limits(default_max_tokens=10_000)).max_tokens == 512 - prompt


def test_the_budget_is_checked_before_anything_is_queued(tiny_engine):
    with pytest.raises(ContextTooLongError, match="context is 512 tokens .* 600 completion tokens"):
        build_plan(tiny_engine, chat(max_tokens=600), Limits())
    with pytest.raises(UsageError, match="at most 3 per request") as e:
        build_plan(tiny_engine, chat(messages=HELLO * 4), Limits(max_messages=3))
    assert e.value.code == "too_many_messages" and e.value.param == "messages"
    long = [{"role": "user", "content": "word " * 600}]
    with pytest.raises(ContextTooLongError) as e:
        build_plan(tiny_engine, chat(messages=long), Limits())
    assert e.value.param == "messages"


def test_a_conversation_drops_its_oldest_turns_to_keep_room_for_the_answer(tiny_engine):
    turns = [{"role": "system", "content": "Be kind."}]
    for i in range(40):
        turns += [{"role": "user", "content": f"question {i} " * 5}, {"role": "assistant", "content": f"answer {i} " * 5}]
    turns.append({"role": "user", "content": "last question"})
    plan = build_plan(tiny_engine, chat(messages=turns, truncate=True), Limits(default_max_tokens=1024))
    assert plan.max_tokens == 256  # at most half the context
    assert plan.dropped > 0 and len(plan.prompt_ids) <= 512 - 256
    kept = [turns[0]] + turns[1 + plan.dropped:]
    assert kept[1]["role"] == "user" and plan.prompt_ids == render_prompt(tiny_engine.tokenizer, kept).ids
    with pytest.raises(ContextTooLongError, match="leaves no room"):
        build_plan(tiny_engine, chat(messages=turns, truncate=True, max_tokens=512), Limits())


def test_sampling_parameters_per_choice(tiny_engine):
    plan = build_plan(tiny_engine, chat(n=3, seed=7, stop=("\n",), temperature=0.5, max_tokens=4),
                      Limits(max_generation_seconds=9))
    assert [p.seed for p in plan.params] == [7, 8, 9]  # n choices differ, the same request repeats
    assert all(p.stop == ("\n",) and p.temperature == 0.5 and p.max_time_s == 9 and p.max_tokens == 4
               for p in plan.params)


def test_tool_use_modes(tiny_engine):
    limits = Limits()
    described = build_plan(tiny_engine, chat(tools=[WEATHER], max_tokens=4), limits)
    assert described.tools.mode == "auto" and described.params[0].grammar is None
    assert len(described.prompt_ids) > len(build_plan(tiny_engine, chat(max_tokens=4), limits).prompt_ids)
    assert build_plan(tiny_engine, chat(tools=[WEATHER], tool_choice="none", max_tokens=4), limits).tools.mode == "none"
    forced = build_plan(tiny_engine, chat(tools=[WEATHER], tool_choice="get_weather", max_tokens=4), limits)
    assert forced.tools.mode == "forced" and forced.params[0].grammar is not None
    with pytest.raises(UsageError) as e:
        build_plan(tiny_engine, chat(tools=[WEATHER], tool_choice="nope"), limits)
    assert e.value.param == "tool_choice"
    with pytest.raises(UsageError, match="cannot be combined"):
        build_plan(tiny_engine, chat(tools=[WEATHER], tool_choice="required",
                                     response_format={"type": "json_object"}), limits)
    with pytest.raises(UsageError) as e:
        build_plan(tiny_engine, chat(response_format={"type": "json_schema", "schema": {"$ref": "#"}}), limits)
    assert e.value.param == "response_format" and e.value.code == "invalid_schema"


def test_a_finished_forced_answer_becomes_one_call(tiny_engine):
    forced = build_plan(tiny_engine, chat(tools=[WEATHER], tool_choice="required", max_tokens=4), Limits()).tools
    content, calls = forced.extract('{"name": "get_weather", "arguments": {"city": "Oslo"}}')
    assert content is None and [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Oslo"}')]
    assert forced.extract('{"name": "get_weather", "argu') == ('{"name": "get_weather", "argu', [])  # cut off


def test_tools_follow_the_models_template(family_tokenizer):
    from types import SimpleNamespace

    from chatloop.models.tool_calls import HERMES

    qwen = SimpleNamespace(tokenizer=family_tokenizer("qwen2.5"), max_len=4096, model_id="qwen-like:test")
    plan = build_plan(qwen, chat(tools=[WEATHER], max_tokens=8), Limits())
    assert plan.tools.format is HERMES
    assert "<tools>" in qwen.tokenizer.decode(plan.prompt_ids)  # the template lists the tools itself
    content, calls = plan.tools.extract('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
                                        '</tool_call>')
    assert content is None and [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Oslo"}')]
