"""A real tool-calling model through the real server: Qwen2.5-Coder-0.5B-Instruct (Qwen's chat
template, Hermes tool calls) served over HTTP and asked with the official `openai` client; its
calls come back parsed, whole and streamed. Skipped when the model is not here (see `qwen_ref`)."""

import json

import openai
import pytest
from server_util import Server, signup

from chatloop.bench.tools import TOOLS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def qwen(qwen_ref, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qwen")
    srv = Server(qwen_ref, f"sqlite:///{tmp / 'chatloop.db'}", log=tmp / "server.log").start(timeout=900)
    key = signup(srv.url, "tools@example.com").post("/api/keys", json={"name": "tests"}).json()["key"]
    yield openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0, timeout=900)
    srv.stop()


def ask(**kw) -> dict:
    return {"model": "default", "messages": [{"role": "user", "content": "What's the weather like in Lisbon right now?"}],
            "tools": TOOLS, "tool_choice": "auto", "temperature": 0, "max_tokens": 100, **kw}


def test_a_prompt_that_needs_a_tool_gets_a_parsed_call_whole_and_streamed(qwen):
    choice = qwen.chat.completions.create(**ask()).choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments)["city"].startswith("Lisb")

    chunks = [c for c in qwen.chat.completions.create(**ask(stream=True)) if c.choices]
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["tool_calls"]
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id.startswith("call_") and deltas[0].type == "function"
    assert deltas[0].function.name == "get_weather" and {d.index for d in deltas} == {0}
    streamed = json.loads("".join(d.function.arguments or "" for d in deltas))
    assert streamed == json.loads(call.function.arguments)
    assert not "".join(c.choices[0].delta.content or "" for c in chunks).strip()  # the call is not content
