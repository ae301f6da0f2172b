"""`chatloop serve --backend openai:URL`: a front server whose model is served by another chatloop
(started here, tiny model), with the product features of a local one — /v1 streaming and not,
stop, n, usage, errors and overload passed on with their statuses, cancellation on disconnect, an
app-API conversation turn with feedback, and the web UI's model list."""

import json
import socket
import sqlite3
import threading
import time

import httpx
import openai
import pytest
from conftest import make_tiny_model
from server_util import Server, new_key, signup, sse_events


@pytest.fixture(scope="module")
def remote(tmp_path_factory, tokenizer):
    """The remote engine: a chatloop running one sequence at a time with two queue places, on a tiny
    model with a long context (an answer nobody stops runs for seconds)."""
    tmp = tmp_path_factory.mktemp("remote")
    model = make_tiny_model(tmp / "model", tokenizer, context=8192, name="tiny-remote")
    srv = Server(str(model), f"sqlite:///{tmp / 'remote.db'}", env={"CHATLOOP_MAX_WAITING": "2"},
                 log=tmp / "remote.log")
    srv.proc_args = ["--max-batch", "1"]
    srv.start()
    srv.db_path = tmp / "remote.db"
    srv.key = signup(srv.url, "remote-admin@example.com").post("/api/keys", json={"name": "front"}).json()["key"]
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def front(tmp_path_factory, remote):
    tmp = tmp_path_factory.mktemp("front")
    srv = Server([], f"sqlite:///{tmp / 'front.db'}", env={"CHATLOOP_BACKEND_KEY": remote.key},
                 log=tmp / "front.log")
    srv.proc_args = ["--backend", f"openai:{remote.url}/v1"]
    srv.start()
    srv.db_path = tmp / "front.db"
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def user(front):
    client = signup(front.url, "front@example.com")
    return client, new_key(client)


@pytest.fixture(scope="module")
def oai(front, user):
    return openai.OpenAI(base_url=front.url + "/v1", api_key=user[1], max_retries=0)


@pytest.fixture(scope="module")
def direct(remote):
    return openai.OpenAI(base_url=remote.url + "/v1", api_key=remote.key, max_retries=0)


def remote_id(remote) -> str:
    return f"tiny-remote:test@127.0.0.1:{remote.port}"


def ask(**kw):
    return {"model": "default", "messages": [{"role": "user", "content": "Tell me about the sea"}],
            "max_tokens": 24, "temperature": 0, **kw}


def test_the_remote_model_is_listed_and_names_its_deployment(front, remote, user, oai):
    assert [m.id for m in oai.models.list().data] == [remote_id(remote)]
    menu = user[0].get("/api/models").json()
    assert [(m["id"], m["name"], m["default"]) for m in menu] == [(remote_id(remote), "default", True)]
    assert httpx.get(front.url + "/healthz").json() == {"status": "ok", "model": remote_id(remote)}


def test_answers_and_usage_are_the_remotes(oai, direct, remote):
    theirs = direct.chat.completions.create(**ask())
    for model in ("default", remote_id(remote)):
        ours = oai.chat.completions.create(**ask(model=model))
        assert ours.model == remote_id(remote)
        assert ours.choices[0].message.content == theirs.choices[0].message.content
        assert ours.choices[0].finish_reason == theirs.choices[0].finish_reason
        assert (ours.usage.prompt_tokens, ours.usage.completion_tokens) == \
            (theirs.usage.prompt_tokens, theirs.usage.completion_tokens)
    again = oai.chat.completions.create(**ask())
    assert again.usage.prompt_tokens_details.cached_tokens > 0  # the remote's prefix cache, reported through


def test_streaming_equals_non_streaming_and_ends_with_usage(oai):
    whole = oai.chat.completions.create(**ask())
    chunks = list(oai.chat.completions.create(**ask(stream=True, stream_options={"include_usage": True})))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stop_n_and_seed_reach_the_remote(oai):
    whole = oai.chat.completions.create(**ask()).choices[0].message.content
    stop = whole[len(whole) // 2:][:3]
    cut = oai.chat.completions.create(**ask(stop=[stop])).choices[0]
    assert cut.message.content == whole[: whole.index(stop)] and cut.finish_reason == "stop"
    two = oai.chat.completions.create(**ask(n=2, temperature=1.0, seed=7))
    same = oai.chat.completions.create(**ask(n=2, temperature=1.0, seed=7))
    assert [c.index for c in two.choices] == [0, 1]
    assert [c.message.content for c in two.choices] == [c.message.content for c in same.choices]
    assert two.usage.completion_tokens > 0



def test_logprobs_and_logit_bias_reach_the_remote(oai, direct):
    theirs = direct.chat.completions.create(**ask(logprobs=True, top_logprobs=2, logit_bias={"77": -100}))
    ours = oai.chat.completions.create(**ask(logprobs=True, top_logprobs=2, logit_bias={"77": -100}))
    expected = [(e.token, e.logprob, [t.token for t in e.top_logprobs]) for e in theirs.choices[0].logprobs.content]
    assert [(e.token, e.logprob, [t.token for t in e.top_logprobs]) for e in ours.choices[0].logprobs.content] \
        == expected and len(expected) == ours.usage.completion_tokens
    chunks = list(oai.chat.completions.create(**ask(logprobs=True, top_logprobs=2, stream=True)))
    assert [e.token for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content] \
        == [e[0] for e in expected]
    forced = oai.chat.completions.create(**ask(max_tokens=3, logit_bias={"77": 100}, logprobs=True))
    assert len({e.token for e in forced.choices[0].logprobs.content}) == 1
    assert oai.chat.completions.create(**ask()).choices[0].logprobs is None


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]}},
                   "required": ["city"]}}}


def test_tool_calls_and_json_answers_come_back_as_from_a_local_model(oai):
    weather = [{"role": "user", "content": "Weather in Paris?"}]
    r = oai.chat.completions.create(**ask(max_tokens=80, tools=[WEATHER], tool_choice="required",
                                          parallel_tool_calls=False, messages=weather))
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Rome", "Oslo")
    stream = list(oai.chat.completions.create(**ask(max_tokens=80, tools=[WEATHER], stream=True, messages=weather,
                                                    tool_choice={"type": "function", "function": {"name": "get_weather"}})))
    assert [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    deltas = [tc for c in stream if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas))["city"] in ("Paris", "Rome", "Oslo")
    # the call and its result go back to the remote as OpenAI messages
    history = weather + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                         {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"}]
    after = oai.chat.completions.create(**ask(messages=history, tools=[WEATHER]))
    assert after.usage.prompt_tokens > r.usage.prompt_tokens
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
              "required": ["n"], "additionalProperties": False}
    js = oai.chat.completions.create(**ask(max_tokens=40, response_format={
        "type": "json_schema", "json_schema": {"name": "n", "schema": schema}}))
    assert 1 <= json.loads(js.choices[0].message.content)["n"] <= 9


def test_the_remotes_errors_keep_their_status_and_message(oai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(**ask(max_tokens=100_000))
    assert "context" in e.value.body["message"] and e.value.body["type"] == "invalid_request_error"
    assert e.value.body["code"] == "context_length_exceeded"  # the remote's code, passed on
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(**ask(max_tokens=100_000, stream=True))  # refused before the stream starts


def last_usage(server) -> tuple[int, int]:
    with sqlite3.connect(server.db_path) as db:
        return db.execute("SELECT status_code, completion_tokens FROM usage ORDER BY created_at DESC LIMIT 1").fetchone()


def wait_for(predicate, what: str, timeout: float = 15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def long_request(front, key: str) -> socket.socket:
    """A long streamed answer, left unread on a raw socket."""
    body = json.dumps(ask(max_tokens=6000, stream=True, messages=[{"role": "user", "content": "Go on forever"}]))
    sock = socket.create_connection(("127.0.0.1", front.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body.encode())
    return sock


def test_a_client_that_leaves_cancels_the_remote_answer(front, remote, user):
    sock = long_request(front, user[1])
    assert b"200 OK" in sock.recv(4096)
    wait_for(lambda: remote.engine_counts()[0] == 1, "the remote to run the answer")
    sock.close()
    wait_for(lambda: remote.engine_counts() == (0, 0), "the remote to free its slot")
    _, tokens = wait_for(lambda: last_usage(remote) if last_usage(remote)[0] == 499 else None,
                         "the remote to log a disconnected request")
    assert tokens < 6000
    wait_for(lambda: last_usage(front)[0] == 499, "the front to log the disconnected request")


def test_remote_overload_is_passed_on_as_503(front, remote, user, oai):
    socks = [long_request(front, user[1])]
    try:
        wait_for(lambda: remote.engine_counts()[0] == 1, "the remote's one slot to be taken")
        socks += [long_request(front, user[1]) for _ in range(2)]
        wait_for(lambda: remote.engine_counts() == (1, 2), "the remote's queue places to be taken")
        with pytest.raises(openai.InternalServerError) as e:
            oai.chat.completions.create(**ask())
        assert e.value.status_code == 503 and e.value.body["code"] == "overloaded"
        assert e.value.response.headers["retry-after"]
    finally:
        for sock in socks:
            sock.close()
    wait_for(lambda: remote.engine_counts() == (0, 0), "the remote to be idle again")


def test_a_conversation_turn_is_stored_with_feedback(front, remote, user):
    client, _ = user
    conv = client.post("/api/conversations", json={}).json()
    with client.stream("POST", f"/api/conversations/{conv['id']}/messages",
                       json={"content": "Hello there", "max_tokens": 16, "temperature": 0}) as r:
        events = sse_events(r)
    assert events[0]["type"] == "start" and events[0]["assistant_message"]["model"] == remote_id(remote)
    done = events[-2]
    assert done["type"] == "done" and done["message"]["status"] == "complete"
    answer = done["message"]
    assert answer["model"] == remote_id(remote) and answer["completion_tokens"] >= 1
    assert answer["prompt_tokens"] > 5 and answer["ttft_ms"] is not None
    assert "".join(e["text"] for e in events if isinstance(e, dict) and e["type"] == "delta") == answer["content"]
    r = client.post(f"/api/messages/{answer['id']}/feedback", json={"rating": "up", "reasons": ["helpful"]})
    assert r.status_code == 200
    full = client.get(f"/api/conversations/{conv['id']}").json()
    stored = next(m for m in full["messages"] if m["id"] == answer["id"])
    assert stored["feedback"]["rating"] == "up" and stored["model"] == remote_id(remote)
    # the second turn sends the whole conversation to the remote
    with client.stream("POST", f"/api/conversations/{conv['id']}/messages",
                       json={"content": "And then?", "max_tokens": 8}) as r:
        second = sse_events(r)[-2]["message"]
    assert second["status"] == "complete" and second["prompt_tokens"] > answer["prompt_tokens"]


def test_an_unreachable_backend_fails_at_start(tmp_path):
    srv = Server([], f"sqlite:///{tmp_path / 'x.db'}", log=tmp_path / "x.log")
    srv.proc_args = ["--backend", "openai:http://127.0.0.1:9/v1"]
    with pytest.raises(RuntimeError, match="exited with 1"):
        srv.start(timeout=60)
    assert "cannot reach the remote engine" in (tmp_path / "x.log").read_text()


def test_concurrent_streams_through_the_front(oai, remote):
    # a request of a test before may still hold one of the remote's places
    wait_for(lambda: remote.engine_counts() == (0, 0), "the remote to be idle", timeout=60)
    results = []

    def one(i):
        r = oai.chat.completions.create(**ask(max_tokens=8, messages=[{"role": "user", "content": f"Count {i}"}]))
        results.append(r.choices[0].message.content is not None)

    # the remote holds 1 running + 2 waiting: the first is let in before the others arrive (three
    # arriving at once could all be waiting before its engine admits one, and the third be refused)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    threads[0].start()
    wait_for(lambda: results or remote.engine_counts()[0] == 1, "the remote to run the first request")
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [True, True, True]
