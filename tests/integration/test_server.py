"""The real server over HTTP, on SQLite and PostgreSQL: the OpenAI API with the official client
(sync, async, streaming) and the `llm` CLI, the app API, security and validation."""

import asyncio
import json
import os
import subprocess
import sys
import threading

import httpx
import openai
import pytest

from server_util import Server, database_url, signup, sse_events


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory, tiny_dir):
    tmp = tmp_path_factory.mktemp(f"server-{request.param}")
    url, drop = database_url(request.param, tmp)
    srv = Server(str(tiny_dir), url, log=tmp / "server.log").start()
    yield srv
    srv.stop()
    if drop:
        drop()


@pytest.fixture(scope="module")
def alice(server):
    client = signup(server.url, "alice@example.com")
    key = client.post("/api/keys", json={"name": "tests"}).json()["key"]
    return client, key


@pytest.fixture(scope="module")
def oai(server, alice):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=alice[1], max_retries=0)


def ask(**kw):
    return {"model": "default", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 12,
            "temperature": 0, **kw}


# --- OpenAI-compatible API ------------------------------------------------------------------------

def test_models_lists_the_served_version(oai):
    models = oai.models.list().data
    assert [m.id for m in models] == ["tiny-llama:test"]


def test_chat_completion_names_the_version_and_counts_usage(oai):
    r = oai.chat.completions.create(**ask())
    assert r.model == "tiny-llama:test" and r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5 and r.usage.completion_tokens >= 1
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_a_shared_prefix_is_taken_from_the_prefix_cache(server, oai):
    system = {"role": "system", "content": "You are a terse assistant who answers in one line. " * 12}
    first = oai.chat.completions.create(**ask(messages=[system, {"role": "user", "content": "Say hello"}]))
    second = oai.chat.completions.create(**ask(messages=[system, {"role": "user", "content": "Say goodbye"}]))
    # the first shares at most the template's opening with earlier requests to this server
    assert first.usage.prompt_tokens_details.cached_tokens < 16
    cached = second.usage.prompt_tokens_details.cached_tokens
    # all but the differing tail ("hello" and the template's few tokens after it), to the token
    assert first.usage.prompt_tokens - 12 <= cached < first.usage.prompt_tokens
    metrics = {line.split(" ")[0]: float(line.split(" ")[1]) for line in httpx.get(server.url + "/metrics").text
               .splitlines() if line.startswith("chatloop_prompt_cached_tokens_total")}
    assert metrics["chatloop_prompt_cached_tokens_total"] >= cached


def test_streaming_equals_non_streaming_greedy(oai):
    whole = oai.chat.completions.create(**ask()).choices[0].message.content
    chunks = list(oai.chat.completions.create(**ask(stream=True, stream_options={"include_usage": True})))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


def test_logprobs_and_logit_bias(oai, tokenizer):
    """Each answer token's log probability, text and bytes, with its alternatives; the same whether
    streamed (with the chunk that carries the token) or not; logit_bias bans or forces tokens; bad
    values are 400s naming the field."""
    r = oai.chat.completions.create(**ask(logprobs=True, top_logprobs=2))
    content, entries = r.choices[0].message.content, r.choices[0].logprobs.content
    assert len(entries) == r.usage.completion_tokens
    assert b"".join(bytes(e.bytes) for e in entries).decode() == content
    assert all(len(e.top_logprobs) == 2 and e.top_logprobs[0].token == e.token and e.logprob <= 0 for e in entries)
    chunks = list(oai.chat.completions.create(**ask(logprobs=True, top_logprobs=2, stream=True)))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [(e.token, round(e.logprob, 4)) for e in entries]
    assert oai.chat.completions.create(**ask()).choices[0].logprobs is None
    two = oai.chat.completions.create(**ask(n=2, temperature=1.0, seed=3, logprobs=True))
    assert [len(c.logprobs.content) for c in two.choices] != [0, 0]
    assert sum(len(c.logprobs.content) for c in two.choices) == two.usage.completion_tokens
    stop = content[3:6]
    cut = oai.chat.completions.create(**ask(stop=[stop], logprobs=True)).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == content[:content.index(stop)]
    assert b"".join(bytes(e.bytes) for e in cut.logprobs.content).decode(errors="replace").startswith(
        cut.message.content + stop)  # a stop sequence's tokens have entries too (usage counts them)

    first = entries[0].token
    [first_id] = tokenizer(first, add_special_tokens=False)["input_ids"]
    banned = oai.chat.completions.create(**ask(logprobs=True, logit_bias={str(first_id): -100}))
    assert banned.choices[0].logprobs.content[0].token != first
    forced = oai.chat.completions.create(**ask(max_tokens=3, logit_bias={"77": 100}, logprobs=True))
    assert len({e.token for e in forced.choices[0].logprobs.content}) == 1
    for bad, param in [({"logit_bias": {"hello": 1}}, "logit_bias"), ({"logit_bias": {"5": 101}}, "logit_bias"),
                       ({"logit_bias": {"999999999": 1}}, "logit_bias"), ({"top_logprobs": 2}, "top_logprobs"),
                       ({"logprobs": True, "top_logprobs": 21}, "top_logprobs")]:
        with pytest.raises(openai.BadRequestError) as e:
            oai.chat.completions.create(**ask(**bad))
        assert e.value.body["param"] == param, (bad, e.value.body)


def test_async_client_concurrent_requests(server, alice):
    async def run():
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=alice[1], max_retries=0)
        results = await asyncio.gather(*(client.chat.completions.create(**ask(seed=i, temperature=1.0))
                                         for i in range(6)))
        await client.close()
        return results

    # A fresh thread owns the event loop: Playwright's sync API (browser tests in the same session)
    # leaves one running on the main thread, where asyncio.run() would refuse to start.
    results = []
    worker = threading.Thread(target=lambda: results.extend(asyncio.run(run())))
    worker.start()
    worker.join(300)
    assert len(results) == 6 and all(r.choices[0].message.content is not None for r in results)


def test_n_seed_stop_and_max_completion_tokens(oai):
    r = oai.chat.completions.create(**ask(n=3, temperature=1.0, seed=5, max_tokens=None, max_completion_tokens=8))
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.finish_reason in ("stop", "length") for c in r.choices)
    again = oai.chat.completions.create(**ask(n=3, temperature=1.0, seed=5, max_tokens=None, max_completion_tokens=8))
    assert [c.message.content for c in r.choices] == [c.message.content for c in again.choices]
    full = oai.chat.completions.create(**ask(max_tokens=30)).choices[0].message.content
    assert len(full) > 8  # the random model never picks its end-of-turn token: 30 tokens of text
    stop = full[4:7]
    cut = oai.chat.completions.create(**ask(max_tokens=30, stop=[stop]))
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_openai_errors_have_the_right_types(server, oai):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="cl-wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(**ask(model="gpt-17"))
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(**ask(temperature=5))
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(**ask(max_tokens=100000))
    assert e.value.body["code"] == "context_length_exceeded"


def test_bad_json_wrong_types_and_big_bodies_get_openai_shaped_errors(server, alice):
    h = {"Authorization": f"Bearer {alice[1]}", "Content-Type": "application/json"}
    url = server.url + "/v1/chat/completions"
    for body, status in [(b"{not json", 400), (json.dumps(ask(messages="hi")).encode(), 400),
                         (json.dumps(ask(n="three")).encode(), 400), (json.dumps(ask(bogus=1)).encode(), 400),
                         # past the body cap plus the room for one full-size image (docs/images.md)
                         (b'{"model": "default", "messages": [{"role": "user", "content": "' + b"x" * 16_000_000
                          + b'"}]}', 413)]:
        r = httpx.post(url, content=body, headers=h, timeout=30)
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert httpx.post(url, json=ask(), timeout=30).status_code == 401


def test_llm_cli_as_a_second_client(server, alice, tmp_path):
    (tmp_path / "extra-openai-models.yaml").write_text(
        f"- model_id: chatloop\n  model_name: default\n  api_base: \"{server.url}/v1\"\n  api_key_name: chatloop\n")
    (tmp_path / "keys.json").write_text(json.dumps({"chatloop": alice[1]}))
    env = {**os.environ, "LLM_USER_PATH": str(tmp_path), "LLM_LOAD_PLUGINS": ""}
    llm = os.path.join(os.path.dirname(sys.executable), "llm")
    r = subprocess.run([llm, "-m", "chatloop", "-o", "temperature", "0", "-o", "max_tokens", "8", "--no-log",
                        "Say hello"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    expected = openai.OpenAI(base_url=server.url + "/v1", api_key=alice[1]).chat.completions.create(
        **ask(max_tokens=8)).choices[0].message.content
    assert r.stdout.strip() == expected.strip()


# --- accounts, auth, CSRF -------------------------------------------------------------------------

def test_first_account_is_admin_and_later_ones_are_not(server, alice):
    assert alice[0].get("/api/me").json()["is_admin"] is True
    bob = signup(server.url, "bob-admin-check@example.com")
    assert bob.get("/api/me").json()["is_admin"] is False


def test_signup_and_login_validation(server):
    c = httpx.Client(base_url=server.url)
    assert c.post("/api/auth/signup", json={"email": "short@example.com", "password": "123"}).status_code == 400
    assert c.post("/api/auth/signup", json={"email": "not-an-email", "password": "long enough pw"}).status_code == 400
    assert c.post("/api/auth/signup", json={"email": "alice@example.com", "password": "long enough pw"}).status_code == 409
    assert c.post("/api/auth/login", json={"email": "alice@example.com", "password": "wrong password"}).status_code == 401
    r = c.post("/api/auth/login", json={"email": "ALICE@example.com", "password": "correct horse battery"})
    assert r.status_code == 200 and "session" in c.cookies and "csrftoken" in c.cookies
    assert "httponly" in r.headers["set-cookie"].lower() and "samesite=lax" in r.headers["set-cookie"].lower()


def test_every_api_route_needs_authentication(server):
    for method, path in [("GET", "/api/conversations"), ("POST", "/api/conversations"), ("GET", "/api/me"),
                         ("GET", "/api/keys"), ("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                         ("POST", "/api/messages/x/feedback"), ("GET", "/api/admin/users")]:
        r = httpx.request(method, server.url + path, json={})
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.json()["error"]["type"] == "authentication_error"


def test_csrf_is_required_for_cookie_writes_but_not_for_keys(server, alice):
    client, key = alice
    raw = httpx.Client(base_url=server.url, cookies=client.cookies)
    assert raw.post("/api/conversations", json={}).status_code == 403
    assert raw.post("/api/conversations", json={}, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert client.post("/api/conversations", json={}).status_code == 201
    assert httpx.post(server.url + "/api/conversations", json={},
                      headers={"Authorization": f"Bearer {key}"}).status_code == 201


def test_api_keys_are_shown_once_listed_and_revocable(server, alice):
    client, _ = alice
    created = client.post("/api/keys", json={"name": "temp"}).json()
    assert created["key"].startswith("cl-") and created["key"].startswith(created["prefix"])
    listed = {k["id"]: k for k in client.get("/api/keys").json()}
    assert "key" not in listed[created["id"]]
    bearer = {"Authorization": f"Bearer {created['key']}"}
    assert httpx.get(server.url + "/api/me", headers=bearer).status_code == 200
    assert client.delete(f"/api/keys/{created['id']}").status_code == 204
    assert httpx.get(server.url + "/api/me", headers=bearer).status_code == 401


# --- conversations, branches, feedback ------------------------------------------------------------

def send(client, conv_id, **body):
    with client.stream("POST", f"/api/conversations/{conv_id}/messages", json={"max_tokens": 8, **body}) as r:
        assert r.status_code == 200, r.read()
        return sse_events(r)


def test_conversation_tree_feedback_and_export(server, alice):
    client, _ = alice
    conv = client.post("/api/conversations", json={}).json()
    events = send(client, conv["id"], content="What is the capital of France?")
    assert [e["type"] for e in events[:1]] == ["start"] and events[-1] == "[DONE]"
    done = events[-2]
    assert done["type"] == "done" and done["message"]["status"] == "complete"
    answer = done["message"]
    assert answer["model"] == "tiny-llama:test" and answer["completion_tokens"] >= 1 and answer["ttft_ms"] is not None
    assert "".join(e["text"] for e in events[:-1] if e["type"] == "delta") == answer["content"]
    user_msg = events[0]["user_message"]
    full = client.get(f"/api/conversations/{conv['id']}").json()
    assert full["title"] == "What is the capital of France?"
    assert [m["role"] for m in full["messages"]] == ["user", "assistant"]
    assert full["current_leaf_id"] == answer["id"]

    regen = send(client, conv["id"], regenerate_from=user_msg["id"], temperature=1.0, seed=3)[-2]["message"]
    assert regen["parent_id"] == user_msg["id"] and regen["id"] != answer["id"]
    r = client.post("/api/comparisons", json={"chosen_message_id": regen["id"], "rejected_message_id": answer["id"]})
    assert r.status_code == 201

    edited = send(client, conv["id"], content="What is the capital of Italy?", parent_id=None)
    assert edited[0]["user_message"]["parent_id"] is None  # a sibling branch of the first question

    r = client.post(f"/api/messages/{answer['id']}/feedback",
                    json={"rating": "down", "reasons": ["incorrect", "too_short"], "comment": "wrong city"})
    assert r.status_code == 200 and r.json()["reasons"] == ["incorrect", "too_short"]
    assert client.post(f"/api/messages/{user_msg['id']}/feedback", json={"rating": "up"}).status_code == 400
    assert client.post(f"/api/messages/{answer['id']}/correction", json={"content": "Paris."}).status_code == 201

    assert client.patch(f"/api/conversations/{conv['id']}", json={"current_leaf_id": answer["id"]}).status_code == 200
    full = client.get(f"/api/conversations/{conv['id']}").json()
    assert len(full["messages"]) == 5 and full["current_leaf_id"] == answer["id"]
    assert next(m for m in full["messages"] if m["id"] == answer["id"])["feedback"]["rating"] == "down"

    md = client.get(f"/api/conversations/{conv['id']}/export", params={"format": "markdown"})
    assert md.status_code == 200 and "What is the capital of France?" in md.text and "Italy" not in md.text
    js = client.get(f"/api/conversations/{conv['id']}/export").json()
    assert [m["id"] for m in js["messages"]] == [user_msg["id"], answer["id"]]

    assert any(c["id"] == conv["id"] for c in client.get("/api/conversations", params={"q": "france"}).json())
    assert not any(c["id"] == conv["id"] for c in client.get("/api/conversations", params={"q": "zzz%"}).json())
    client.patch(f"/api/conversations/{conv['id']}", json={"title": "Capitals", "archived": True})
    assert any(c["title"] == "Capitals" for c in client.get("/api/conversations", params={"archived": True}).json())
    assert client.delete(f"/api/conversations/{conv['id']}").status_code == 204
    assert client.get(f"/api/conversations/{conv['id']}").status_code == 404


def test_another_users_objects_answer_404(server, alice):
    client, _ = alice
    conv = client.post("/api/conversations", json={}).json()
    answer = send(client, conv["id"], content="private question")[-2]["message"]
    mallory = signup(server.url, "mallory@example.com")
    for method, path, body in [
        ("GET", f"/api/conversations/{conv['id']}", None),
        ("PATCH", f"/api/conversations/{conv['id']}", {"title": "mine"}),
        ("DELETE", f"/api/conversations/{conv['id']}", None),
        ("GET", f"/api/conversations/{conv['id']}/export", None),
        ("POST", f"/api/conversations/{conv['id']}/messages", {"content": "hi"}),
        ("POST", f"/api/messages/{answer['id']}/feedback", {"rating": "up"}),
        ("POST", f"/api/messages/{answer['id']}/correction", {"content": "x"}),
        ("POST", "/api/comparisons", {"chosen_message_id": answer["id"], "rejected_message_id": answer["id"] + "0"}),
    ]:
        r = mallory.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.status_code)
    assert conv["id"] not in [c["id"] for c in mallory.get("/api/conversations", params={"q": "private"}).json()]
    assert client.get(f"/api/conversations/{conv['id']}").json()["title"] != "mine"


def test_settings_opt_out_and_delete_my_data(server):
    carol = signup(server.url, "carol@example.com")
    assert carol.get("/api/me").json()["train_opt_in"] is True
    me = carol.patch("/api/me", json={"train_opt_in": False, "locale": "zh-CN", "custom_instructions": "Be brief."})
    assert me.json()["train_opt_in"] is False and me.json()["locale"] == "zh-CN"
    assert carol.patch("/api/me", json={"locale": "klingon"}).status_code == 400
    conv = carol.post("/api/conversations", json={}).json()
    send(carol, conv["id"], content="hello")
    assert carol.delete("/api/me/data").status_code == 204
    assert carol.get("/api/conversations").json() == []


def test_admin_controls_signup_and_accounts(server, alice):
    admin = alice[0]
    dave = signup(server.url, "dave@example.com")
    assert dave.get("/api/admin/users").status_code == 403
    assert dave.get("/api/admin/stats").status_code == 403
    stats = admin.get("/api/admin/stats").json()
    assert stats["users"] >= 2 and stats["model"] == "tiny-llama:test" and "completion_tokens" in stats
    assert admin.patch("/api/admin/settings", json={"signup_enabled": False}).json() == {"signup_enabled": False}
    r = httpx.post(server.url + "/api/auth/signup", json={"email": "eve@example.com", "password": "long enough pw"})
    assert r.status_code == 403
    admin.patch("/api/admin/settings", json={"signup_enabled": True})
    dave_id = dave.get("/api/me").json()["id"]
    assert admin.patch(f"/api/admin/users/{dave_id}", json={"disabled": True}).json()["disabled"] is True
    assert dave.get("/api/me").status_code == 403


def test_health_metrics_and_openapi(server, alice):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok", "model": "tiny-llama:test"}
    text = httpx.get(server.url + "/metrics").text  # localhost may read metrics
    for name in ("chatloop_http_requests_total", "chatloop_time_to_first_token_seconds", "chatloop_generated_tokens",
                 "chatloop_engine_queue_depth", "chatloop_active_streams", "chatloop_prompt_cached_tokens_total",
                 "chatloop_prefix_cache_bytes"):
        assert name in text
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    for p in ("/api/auth/signup", "/api/auth/login", "/api/conversations", "/api/conversations/{conv_id}",
              "/api/conversations/{conv_id}/messages", "/api/messages/{message_id}/feedback", "/v1/chat/completions"):
        assert p in paths


# --- constrained decoding and tools ---------------------------------------------------------------

# Bounded values: even a random model must finish these within max_tokens, so the tests can demand
# a complete, valid answer rather than accept one cut off by the token limit.
CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                         "rank": {"type": "integer", "minimum": 1, "maximum": 99}},
        "required": ["city", "rank"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]}},
                   "required": ["city"]}}}


def test_json_schema_response_format_always_parses(oai):
    for seed in range(3):
        r = oai.chat.completions.create(**ask(max_tokens=200, temperature=1.0, seed=seed, response_format={
            "type": "json_schema", "json_schema": {"name": "city", "schema": CITY}}))
        choice = r.choices[0]
        assert choice.finish_reason == "stop"
        data = json.loads(choice.message.content)
        assert set(data) == {"city", "rank"} and len(data["city"]) <= 12 and 1 <= data["rank"] <= 99


def test_json_object_and_bad_schema(oai):
    r = oai.chat.completions.create(**ask(max_tokens=60, temperature=0, response_format={"type": "json_object"}))
    assert r.choices[0].message.content.lstrip().startswith(("{", "["))
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(**ask(response_format={"type": "json_schema", "json_schema": {"name": "x"}}))


def test_forced_tool_call_returns_tool_calls(oai):
    r = oai.chat.completions.create(**ask(max_tokens=80, tools=[WEATHER], tool_choice="required",
                                          parallel_tool_calls=False, messages=[{"role": "user", "content": "Weather in Paris?"}]))
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Rome", "Oslo")
    stream = list(oai.chat.completions.create(**ask(max_tokens=80, tools=[WEATHER], stream=True, tool_choice={
        "type": "function", "function": {"name": "get_weather"}})))
    finish = [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason]
    assert finish == ["tool_calls"]
    deltas = [tc for c in stream if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas))["city"] in ("Paris", "Rome", "Oslo")


def test_tool_results_round_trip_and_tool_validation(oai):
    history = [{"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                   "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"}]
    r = oai.chat.completions.create(**ask(messages=history, tools=[WEATHER]))
    without_result = oai.chat.completions.create(**ask(messages=history[:2], tools=[WEATHER]))
    assert r.choices[0].message.content is not None or r.choices[0].message.tool_calls
    # the call and its result reached the prompt: the result message adds its tokens
    assert r.usage.prompt_tokens > without_result.usage.prompt_tokens > 0
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(**ask(tools=[WEATHER], tool_choice={"type": "function",
                                                                       "function": {"name": "nope"}}))
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(**ask(tools=[{"type": "function", "function": {"name": "bad name!"}}]))
