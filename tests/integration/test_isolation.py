"""One request never hurts another: each bad request runs beside good ones, which must finish with
exactly their solo output, and the server stays healthy afterwards (tiny model, float32)."""

import concurrent.futures
import json
import threading
import time

import httpx
import pytest

from server_util import Server, new_key, signup

PROMPTS = ["Say hello", "Name a colour", "Count to three", "What is up?"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_dir):
    tmp = tmp_path_factory.mktemp("isolation")
    srv = Server(str(tiny_dir), f"sqlite:///{tmp / 'chatloop.db'}", log=tmp / "server.log").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def key(server):
    return new_key(signup(server.url, "isolation@example.com"))


def post(server, key, body: dict | bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + "/v1/chat/completions", content=content, headers=headers, timeout=120)


def good(prompt: str) -> dict:
    return {"model": "default", "messages": [{"role": "user", "content": prompt}], "max_tokens": 24, "temperature": 0}


@pytest.fixture(scope="module")
def expected(server, key):
    return {p: post(server, key, good(p)).json()["choices"][0]["message"]["content"] for p in PROMPTS}


def beside_good_ones(server, key, expected, bad: dict | bytes) -> httpx.Response:
    """Send `bad` at the same moment as four good requests; check the good ones, return the bad one's answer."""
    start = threading.Barrier(len(PROMPTS) + 1)

    def send(body):
        start.wait()
        return post(server, key, body)

    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS) + 1) as pool:
        bad_future = pool.submit(send, bad)
        goods = [pool.submit(send, good(p)) for p in PROMPTS]
        for prompt, future in zip(PROMPTS, goods):
            r = future.result()
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == expected[prompt]
        response = bad_future.result()
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    assert post(server, key, good(PROMPTS[0])).json()["choices"][0]["message"]["content"] == expected[PROMPTS[0]]
    return response


def test_penalties_are_served_and_hurt_nobody(server, key, expected):
    r = beside_good_ones(server, key, expected, {**good("Tell me a story"), "presence_penalty": 1.5,
                                                 "frequency_penalty": -0.5, "max_tokens": 40})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["finish_reason"] == "length" and r.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("schema", [
    {"$ref": "#"},
    {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    {"type": "object", "properties": {"next": {"$ref": "#"}}, "required": ["next"]},
    {"type": "no-such-type"},
], ids=["self-ref", "mutual-defs", "required-cycle", "bad-type"])
def test_a_schema_without_a_finite_value_is_refused_before_it_is_queued(server, key, expected, schema):
    bad = {**good("Give me JSON"), "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    r = beside_good_ones(server, key, expected, bad)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "response_format" and error["code"] == "invalid_schema"
    assert "invalid JSON schema" in error["message"]


def test_deeply_nested_tool_call_arguments_are_refused(server, key, expected):
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "[" * 5000}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]
    r = beside_good_ones(server, key, expected, {**good("x"), "messages": messages})
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "messages"


def test_a_deeply_nested_body_is_a_400(server, key, expected):
    body = ('{"model": "default", "messages": [{"role": "user", "content": "hi"}], "metadata": '
            + '{"a": ' * 5000 + '"x"' + "}" * 5000 + "}").encode()
    r = beside_good_ones(server, key, expected, body)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_a_thousand_message_conversation_is_refused_quickly_and_cheaply(server, key, expected):
    messages = [{"role": "user", "content": "hi"}]
    for i in range(500):
        messages += [{"role": "assistant", "content": f"answer number {i}"}, {"role": "user", "content": "and more?"}]
    assert len(messages) > 1000
    rss_before = server.rss_kib()
    started = time.perf_counter()
    r = beside_good_ones(server, key, expected, {**good("x"), "messages": messages})
    took = time.perf_counter() - started
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and "context is 512 tokens" in error["message"]
    # before: 200 messages took 40 s and RSS grew by 2 GB (quadratic rendering); now it is one render
    assert took < 10, f"the bad request and four good ones took {took:.1f} s"
    alone = time.perf_counter()
    assert post(server, key, {**good("x"), "messages": messages}).status_code == 400
    assert time.perf_counter() - alone < 2.0
    assert server.rss_kib() - rss_before < 100 * 1024


def test_too_many_messages_are_refused_by_count(server, key, expected):
    messages = [{"role": "user", "content": "hi"}] * 3000
    r = beside_good_ones(server, key, expected, {**good("x"), "messages": messages})
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_messages"
    assert "at most 2048" in r.json()["error"]["message"]


def test_asking_for_more_tokens_than_the_context_holds_names_the_budget(server, key, expected):
    r = beside_good_ones(server, key, expected, {**good("x"), "max_tokens": 100_000})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert "100000 completion tokens were requested" in r.json()["error"]["message"]


def test_a_request_without_max_tokens_gets_the_server_default(server, key):
    r = post(server, key, {"model": "default", "messages": [{"role": "user", "content": "Say hello"}],
                           "temperature": 0, "stop": None})
    assert r.status_code == 200
    usage = r.json()["usage"]
    # the tiny model never ends on its own: it stops at the room left in its 512-token context
    assert usage["prompt_tokens"] + usage["completion_tokens"] == 512
