"""The security review's findings, each pinned against the real server (tiny model, SQLite):
lone surrogates and other JSON no encoder accepts are a 400, never a 500; a chunked body over the
cap is a 413; `/openapi.json` documents the errors the server really sends (and no 422), real
response schemas that real responses match, and strict types; a wrong method is a 405 with
`Allow`; created feedback objects answer with their ids."""

import json
import re

import httpx
import jsonschema
import pytest

from server_util import Server, new_key, signup, sse_events

LONE = '"\\ud800"'  # a JSON escape Python's json module decodes into a str nothing can encode


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_dir):
    tmp = tmp_path_factory.mktemp("security")
    srv = Server(str(tiny_dir), f"sqlite:///{tmp / 'chatloop.db'}", log=tmp / "server.log").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(server):
    """The first account (an administrator), cookie-authenticated, and a bearer key of it."""
    client = signup(server.url, "first-admin@example.com")
    return client, new_key(client)


@pytest.fixture(scope="module")
def schema(server):
    return httpx.get(server.url + "/openapi.json").json()


@pytest.fixture(scope="module")
def answers(admin):
    """A conversation with two sibling answers (a question and a regeneration)."""
    client, _ = admin
    conv = client.post("/api/conversations", json={}).json()
    first = send(client, conv["id"], content="hello")
    second = send(client, conv["id"], regenerate_from=first[0]["user_message"]["id"])
    return conv, first[-2]["message"], second[-2]["message"]


def send(client, conv_id, **body):
    with client.stream("POST", f"/api/conversations/{conv_id}/messages", json={"max_tokens": 4, **body}) as r:
        assert r.status_code == 200, r.read()
        return sse_events(r)


def raw(server, key, method, path, text: str | bytes, **headers) -> httpx.Response:
    content = text.encode() if isinstance(text, str) else text
    return httpx.request(method, server.url + path, content=content, timeout=60,
                         headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers})


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code:
        assert error["code"] == code, error
    return error


# --- finding 1: lone surrogates ----------------------------------------------------------------------

ASK = '{"model": "default", "max_tokens": 4, "messages": [%s]%s}'
USER = '{"role": "user", "content": "hi"}'
ARGS = json.dumps(json.dumps({"city": "\ud800"}))  # escapes inside escapes: valid JSON outside, not inside


@pytest.mark.parametrize("body", [
    ASK % ('{"role": "user", "content": %s}' % LONE, ""),
    ASK % ('{"role": "system", "content": %s}, %s' % (LONE, USER), ""),
    ASK % ('{"role": "user", "content": [{"type": "text", "text": %s}]}' % LONE, ""),
    ASK % (USER, ', "tools": [{"type": "function", "function": {"name": "f", "description": %s}}]' % LONE),
    '{"model": %s, "messages": [%s]}' % (LONE, USER),
    ASK % (USER, ', "stop": [%s]' % LONE),
    ASK % (USER, ', "metadata": {%s: "x"}' % LONE),
], ids=["content", "system", "content-part", "tool-description", "model", "stop", "metadata-key"])
def test_lone_surrogates_in_v1_bodies_are_a_400(server, admin, body):
    error = assert_error(raw(server, admin[1], "POST", "/v1/chat/completions", body), 400, "invalid_json")
    assert "surrogate" in error["message"] or "hex escape" in error["message"]


def test_a_lone_surrogate_inside_tool_call_arguments_is_a_400(server, admin):
    messages = ('%s, {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", '
                '"function": {"name": "f", "arguments": %s}}]}, {"role": "tool", "tool_call_id": "c1", '
                '"content": "ok"}' % (USER, ARGS))
    error = assert_error(raw(server, admin[1], "POST", "/v1/chat/completions", ASK % (messages, "")), 400)
    assert error["param"] == "messages" and "arguments of f are not JSON" in error["message"]


def test_lone_surrogates_in_app_bodies_are_a_400(server, admin, answers):
    conv, a, b = answers
    key = admin[1]
    for method, path, body in [
        ("PATCH", f"/api/conversations/{conv['id']}", '{"current_leaf_id": %s}' % LONE),
        ("POST", "/api/comparisons", '{"chosen_message_id": %s, "rejected_message_id": "%s"}' % (LONE, b["id"])),
        ("POST", f"/api/conversations/{conv['id']}/messages", '{"content": %s}' % LONE),
        ("POST", f"/api/messages/{a['id']}/feedback", '{"rating": "up", "comment": %s}' % LONE),
        ("PATCH", "/api/me", '{"custom_instructions": %s}' % LONE),
    ]:
        assert_error(raw(server, key, method, path, body), 400, "invalid_json")
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"


def test_every_json_body_refuses_lone_surrogates(server, admin, schema):
    """Whatever route comes next: every operation with a JSON body refuses them before it runs."""
    seen = 0
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if "application/json" not in op.get("requestBody", {}).get("content", {}):
                continue
            url = re.sub(r"\{[^}]+\}", "000000000000000000000000", path)
            r = raw(server, admin[1], method.upper(), url, '{"x": %s, %s: 1}' % (LONE, LONE))
            assert_error(r, 400, "invalid_json")
            seen += 1
    assert seen >= 15


@pytest.mark.parametrize("body", [b'{"model": "\xff\xfe", "messages": []}', b'{"model": "default", "n": NaN}',
                                  b'{"metadata": ' + b'[' * 300 + b']' * 300 + b'}'],
                         ids=["invalid-utf8", "nan", "deep"])
def test_json_no_decoder_should_accept_is_a_400(server, admin, body):
    assert_error(raw(server, admin[1], "POST", "/v1/chat/completions", body), 400, "invalid_json")


# --- finding 2: a chunked body over the cap -----------------------------------------------------------

def chunks(total: int):
    yield b'{"title": "'
    for _ in range(total // 65536 + 1):
        yield b"x" * 65536
    yield b'"}'


def test_a_chunked_body_over_the_limit_is_413(server, admin):
    for path, size in [("/api/conversations", 2 << 20), ("/v1/chat/completions", 20 << 20)]:
        r = httpx.post(server.url + path, content=chunks(size), timeout=60,
                       headers={"Authorization": f"Bearer {admin[1]}", "Content-Type": "application/json"})
        assert "content-length" not in r.request.headers  # it really went chunked
        assert_error(r, 413, "body_too_large")


# --- finding 3: the schema tells the truth ------------------------------------------------------------

def test_strict_types_refuse_numbers_for_booleans_and_booleans_for_numbers(server, admin, answers):
    conv = answers[0]
    for method, path, body, param in [
        ("PATCH", "/api/me", {"train_opt_in": 0}, "train_opt_in"),
        ("PATCH", "/api/admin/settings", {"signup_enabled": 0}, "signup_enabled"),
        ("POST", "/v1/chat/completions", {"model": "default", "messages": [{"role": "user", "content": "hi"}],
                                          "max_tokens": True}, "max_tokens"),
        ("POST", "/v1/chat/completions", {"model": "default", "messages": [{"role": "user", "content": "hi"}],
                                          "temperature": "1"}, "temperature"),
        ("POST", f"/api/conversations/{conv['id']}/messages", {"content": "hi", "seed": True}, "seed"),
        ("POST", "/api/admin/releases/canary", {"model": "x:1", "percent": True}, "percent"),
    ]:
        error = assert_error(raw(server, admin[1], method, path, json.dumps(body)), 400, "invalid_value")
        assert error["param"] == param
    assert admin[0].get("/api/me").json()["train_opt_in"] is True
    assert admin[0].get("/api/admin/settings").json() == {"signup_enabled": True}


def test_wrong_methods_answer_405_with_allow(server, admin, schema):
    for path, item in schema["paths"].items():
        url = re.sub(r"\{[^}]+\}", "000000000000000000000000", path)
        documented = {m.upper() for m in item}
        wrong = next(m for m in ("PUT", "PATCH", "DELETE", "POST", "GET") if m not in documented)
        r = httpx.request(wrong, server.url + url, headers={"Authorization": f"Bearer {admin[1]}"})
        assert_error(r, 405, "method_not_allowed")
        allowed = set(r.headers["allow"].split(", "))
        assert allowed == documented | ({"HEAD"} if "GET" in documented else set()), path
    assert_error(httpx.get(server.url + "/api/no-such-route"), 404, "not_found")


def test_created_comparisons_and_corrections_answer_with_their_ids(admin, answers):
    client, _ = admin
    _, a, b = answers
    r = client.post("/api/comparisons", json={"chosen_message_id": b["id"], "rejected_message_id": a["id"]})
    assert r.status_code == 201 and re.fullmatch(r"[0-9a-f]{24}", r.json()["id"]), r.text
    again = client.post("/api/comparisons", json={"chosen_message_id": a["id"], "rejected_message_id": b["id"]})
    assert again.json()["id"] != r.json()["id"]
    r = client.post(f"/api/messages/{a['id']}/correction", json={"content": "A better answer."})
    assert r.status_code == 201 and re.fullmatch(r"[0-9a-f]{24}", r.json()["id"]), r.text
    assert r.json() == {"id": r.json()["id"], "message_id": a["id"], "content": "A better answer."}


def test_openapi_documents_the_errors_it_sends_and_never_422(schema):
    assert "422" not in json.dumps(schema) and "HTTPValidationError" not in schema["components"]["schemas"]
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "session", "csrf", "csrf_cookie"}
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, item in schema["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            responses = op["responses"]
            for status, response in responses.items():
                if status[0] in "45":
                    assert response["content"]["application/json"]["schema"] == error_ref, where
            if op.get("parameters") or op.get("requestBody"):
                assert "400" in responses, where
            if op.get("requestBody"):
                assert "413" in responses, where
            public = path in ("/api/auth/signup", "/api/auth/login", "/healthz", "/metrics")
            assert bool(op.get("security")) != public, where
            if not public:
                assert {"401", "403", "429"} <= set(responses), where
                assert "Retry-After" in responses["429"]["headers"]
            if method in ("post", "patch", "delete") and not public:
                assert {"session": [], "csrf": [], "csrf_cookie": []} in op["security"], where
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"404", "503"} <= set(chat) and "Retry-After" in chat["503"]["headers"]
    assert "409" in schema["paths"]["/api/comparisons"]["post"]["responses"]


def _success_schema(schema: dict, path: str, method: str) -> dict:
    responses = schema["paths"][path][method]["responses"]
    status = next(s for s in responses if s[0] == "2")
    return responses[status]["content"]["application/json"]["schema"]


def test_every_app_route_documents_a_real_response_schema(schema):
    for path, item in schema["paths"].items():
        for method, op in item.items():
            ok = {s: r for s, r in op["responses"].items() if s[0] == "2"}
            assert ok, f"{method} {path}"
            for status, response in ok.items():
                if status == "204":
                    assert "content" not in response, f"{method} {path}"
                    continue
                for media, body in response["content"].items():
                    if media == "application/json":
                        assert body["schema"] not in ({}, None), f"{method.upper()} {path} answers an empty schema"


def test_real_responses_match_their_documented_schemas(server, admin, answers, schema):
    """What a generated client would check: each answer validates against the schema it documents."""
    client, _ = admin
    conv, a, _ = answers
    client.post(f"/api/messages/{a['id']}/feedback", json={"rating": "down", "reasons": ["incorrect"]})
    for method, path, url in [
        ("get", "/api/me", "/api/me"), ("get", "/api/keys", "/api/keys"), ("get", "/api/models", "/api/models"),
        ("get", "/api/tools", "/api/tools"), ("get", "/api/conversations", "/api/conversations"),
        ("get", "/api/conversations/{conv_id}", f"/api/conversations/{conv['id']}"),
        ("get", "/api/admin/users", "/api/admin/users"), ("get", "/api/admin/stats", "/api/admin/stats"),
        ("get", "/api/admin/dashboard", "/api/admin/dashboard"), ("get", "/api/admin/releases", "/api/admin/releases"),
        ("get", "/v1/models", "/v1/models"), ("get", "/healthz", "/healthz"),
    ]:
        r = client.get(url)
        assert r.status_code == 200, (url, r.text)
        documented = {"components": schema["components"], **_success_schema(schema, path, method)}
        jsonschema.validate(r.json(), documented)
    detail = client.get(f"/api/conversations/{conv['id']}").json()
    assert next(m for m in detail["messages"] if m["id"] == a["id"])["feedback"]["rating"] == "down"
    bad = assert_error(client.get("/api/conversations/000000000000000000000000"), 404)
    error_schema = {"components": schema["components"], "$ref": "#/components/schemas/ErrorResponse"}
    jsonschema.validate({"error": bad}, error_schema)
