"""/v1 stream shaping with tools: content streams as it is decoded, each call arrives as OpenAI
tool_calls deltas once complete, and the choice finishes with `tool_calls`."""

import json

from conftest import run_async

from chatloop.engine.scheduler import GenerationResult
from chatloop.models.tool_calls import HERMES
from chatloop.server.openai.serving import ChunkSink, completion
from chatloop.serving.plan import ToolUse

AUTO = ToolUse("auto", frozenset({"get_weather", "get_time"}), (), HERMES)
ANSWER = ('Let me look. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
          '<tool_call>\n{"name": "get_time", "arguments": {"tz": "UTC"}}\n</tool_call>')


def result(text: str, finish: str = "stop") -> GenerationResult:
    return GenerationResult(text=text, token_ids=[], finish_reason=finish, prompt_tokens=3, completion_tokens=9,
                            model="m", ttft_s=0.1, latency_s=0.2)


async def no_log(results, status):
    return None


def payloads(chunks) -> list[dict]:
    return [json.loads(c[len("data: "):]) for c in chunks if c.startswith("data: {")]


def test_auto_tool_calls_stream_as_deltas_once_each_call_is_complete():
    sink = ChunkSink("chatcmpl-1", "m", 1, AUTO, include_usage=False, log_usage=no_log)
    sink.start()
    per_delta = [payloads(sink.delta(0, ANSWER[i:i + 5])) for i in range(0, len(ANSWER), 5)]
    end = payloads(sink.finish(0, result(ANSWER)))
    deltas = [c["choices"][0]["delta"] for chunks in per_delta for c in chunks] + [c["choices"][0]["delta"] for c in end]
    assert "".join(d["content"] or "" for d in deltas) == "Let me look."
    first_call = next(i for i, chunks in enumerate(per_delta) if any(c["choices"][0]["delta"]["tool_calls"]
                                                                     for c in chunks))
    assert first_call < len(per_delta) - 5  # the first call left before the answer ended
    calls = [tc for d in deltas for tc in d["tool_calls"] or []]
    assert [(c["index"], c["type"], c["function"]["name"]) for c in calls if c["id"]] == [
        (0, "function", "get_weather"), (1, "function", "get_time")]
    assert all(c["id"].startswith("call_") for c in calls if c["function"]["name"])
    args = {i: "".join(c["function"]["arguments"] or "" for c in calls if c["index"] == i) for i in (0, 1)}
    assert json.loads(args[0]) == {"city": "Oslo"} and json.loads(args[1]) == {"tz": "UTC"}
    assert end[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert run_async(sink.end([result(ANSWER)], False))[-1] == "data: [DONE]\n\n"


def test_streamed_and_whole_answers_agree():
    whole = completion("chatcmpl-2", "m", AUTO, [result(ANSWER)]).choices[0]
    assert whole.finish_reason == "tool_calls" and whole.message.content == "Let me look."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in whole.message.tool_calls] == [
        ("get_weather", {"city": "Oslo"}), ("get_time", {"tz": "UTC"})]
    plain = "No call here <tool"
    sink = ChunkSink("chatcmpl-3", "m", 1, AUTO, include_usage=False, log_usage=no_log)
    streamed = payloads(sink.delta(0, plain)) + payloads(sink.finish(0, result(plain)))
    assert "".join(c["choices"][0]["delta"]["content"] or "" for c in streamed) == plain
    assert streamed[-1]["choices"][0]["finish_reason"] == "stop"
    assert completion("chatcmpl-4", "m", AUTO, [result(plain)]).choices[0].message.content == plain


def test_every_tokens_logprobs_are_streamed_once_even_while_a_call_is_held_back():
    sink = ChunkSink("chatcmpl-1", "m", 1, AUTO, include_usage=False, log_usage=no_log)
    sink.start()
    pieces = [ANSWER[i:i + 5] for i in range(0, len(ANSWER), 5)]
    entries = [{"token": p, "logprob": -0.5, "bytes": list(p.encode()), "top_logprobs": []} for p in pieces]
    chunks = [c for p, e in zip(pieces, entries) for c in payloads(sink.delta(0, p, [e]))]
    streamed = [e for c in chunks for e in (c["choices"][0]["logprobs"] or {"content": []})["content"]]
    assert streamed == entries
    held = [c for c in chunks if c["choices"][0]["logprobs"] and not c["choices"][0]["delta"]["content"]]
    assert held and all(c["choices"][0]["delta"]["tool_calls"] is None for c in held)  # no content to ride on
    assert all(c["choices"][0]["logprobs"] is None for c in payloads(sink.delta(0, "x")))
