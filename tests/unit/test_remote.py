"""The remote engine's pieces without a server: backend specs, the remote's errors in our terms,
streamed chunks (content and tool-call deltas) into one answer, and the plan it is sent."""

import json

import pytest

from chatloop.engine.remote import RemoteBackend, RemoteModel, _Answer, remote_error, sampling
from chatloop.engine.sampling import SamplingParams
from chatloop.errors import EngineOverloaded, ModelRefError, RemoteEngineError, UsageError
from chatloop.models.tool_calls import OURS, ToolParser, split_answer
from chatloop.serving.plan import ChatRequest, Limits, build_plan


def test_backend_specs():
    assert RemoteBackend.parse("openai:http://gpu:8000/v1").base_url == "http://gpu:8000/v1"
    assert RemoteBackend.parse("openai:http://gpu:8000").base_url == "http://gpu:8000/v1"
    assert RemoteBackend.parse("openai:https://api.example.com/openai/v1/").base_url == \
        "https://api.example.com/openai/v1"
    for bad in ("vllm:http://gpu:8000", "openai:gpu:8000", "openai:"):
        with pytest.raises(UsageError):
            RemoteBackend.parse(bad)
    model = RemoteModel("http://gpu:8000/v1", "meta-llama/Llama-3.1-8B-Instruct", "secret")
    assert model.model_id == "meta-llama/Llama-3.1-8B-Instruct@gpu:8000" and "secret" not in repr(model)


def body(message: str, **extra) -> bytes:
    return json.dumps({"error": {"message": message, **extra}}).encode()


def test_remote_errors_map_onto_ours():
    e = remote_error(400, body("too long", param="messages", code="context_length_exceeded"), "x")
    assert type(e) is UsageError and (str(e), e.param, e.code) == ("too long", "messages", "context_length_exceeded")
    assert isinstance(remote_error(404, body("no such model"), "x"), ModelRefError)
    for status in (429, 503):
        assert isinstance(remote_error(status, body("busy"), "x"), EngineOverloaded)
    for status in (401, 500, 502):
        assert isinstance(remote_error(status, body("nope"), "x"), RemoteEngineError)
    assert "<html>" in str(remote_error(500, b"<html>oops</html>", "x"))  # not JSON: the text is kept


def test_streamed_chunks_become_one_answer_with_calls_our_parser_reads():
    answer = _Answer()
    chunks = [
        {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"delta": {"content": "Let me check. "}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "get_weather",
                                                                                      "arguments": '{"ci'}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]}}]},
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 12}},
    ]
    texts = [answer.feed(c) for c in chunks]
    assert "".join(texts) == "Let me check. " and answer.finish == "stop" and answer.chunks == 3
    assert answer.usage["prompt_tokens"] == 30
    content, calls = split_answer(ToolParser(OURS, {"get_weather"}), "".join(texts) + answer.rendered_calls())
    assert content.strip() == "Let me check." and [(c.name, json.loads(c.arguments)) for c in calls] == \
        [("get_weather", {"city": "Oslo"})]


def test_a_remotes_logprobs_are_taken_where_asked_for_and_malformed_entries_dropped():
    good = {"token": " Oslo", "logprob": -0.5, "bytes": [32, 79, 115, 108, 111],
            "top_logprobs": [{"token": " Oslo", "logprob": -0.5, "bytes": None}, {"token": 3}]}
    chunk = {"choices": [{"delta": {"content": " Oslo"}, "logprobs": {"content": [
        good, {"token": "x", "logprob": None}, {"logprob": -1.0}, "junk", {"token": "y", "logprob": True}]}}]}
    asked = _Answer(asked_logprobs=True)
    asked.feed(chunk)
    asked.feed({"choices": [{"delta": {}, "logprobs": None, "finish_reason": "stop"}]})  # none in the last chunk
    assert asked.logprobs == [{"token": " Oslo", "logprob": -0.5, "bytes": [32, 79, 115, 108, 111],
                               "top_logprobs": [{"token": " Oslo", "logprob": -0.5, "bytes": [32, 79, 115, 108, 111]}]}]
    unasked = _Answer()
    unasked.feed(chunk)
    assert unasked.logprobs == []  # a remote that sends them unasked does not put them in our answer
    out = sampling(SamplingParams(logprobs=3, logit_bias=((5, -100.0),)))
    assert (out["logprobs"], out["top_logprobs"], out["logit_bias"]) == (True, 3, {"5": -100.0})


def test_sampling_fields_leave_out_what_the_request_left_open():
    assert sampling(SamplingParams(max_tokens=None, temperature=0)) == {
        "temperature": 0, "top_p": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0}
    out = sampling(SamplingParams(max_tokens=5, seed=3, stop=("x",)))
    assert (out["max_tokens"], out["seed"], out["stop"]) == (5, 3, ["x"])


class FakeRemote:
    remote = True
    model_id = "m@host"


def test_a_remote_plan_carries_the_request_as_openai_fields():
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    req = ChatRequest(messages=[{"role": "user", "content": "hi", "tool_calls": None}], n=2, seed=5,
                      tools=[tool], tool_choice="get_weather")
    plan = build_plan(FakeRemote(), req, Limits())
    assert plan.prompt_ids == [] and plan.max_tokens is None
    assert plan.body["messages"] == [{"role": "user", "content": "hi"}]
    assert plan.body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert plan.tools.mode == "auto" and plan.tools.names == {"get_weather"}
    assert [p.seed for p in plan.params] == [5, 6] and all(p.grammar is None for p in plan.params)
    schema = {"type": "object"}
    plan = build_plan(FakeRemote(), ChatRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=9,
                                                response_format={"type": "json_schema", "schema": schema}), Limits())
    assert plan.body["response_format"] == {"type": "json_schema", "json_schema": {"name": "response",
                                                                                   "schema": schema}}
    assert "tools" not in plan.body and plan.params[0].max_tokens == 9
    with pytest.raises(UsageError):
        build_plan(FakeRemote(), ChatRequest(messages=[{"role": "user", "content": "x"}] * 3), Limits(max_messages=2))
