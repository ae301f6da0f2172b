"""Access control on every route (OWASP API1/API5): the test walks every operation the server
publishes in `/openapi.json`, so a new route is covered the day it is added, as

- an anonymous client: 401 everywhere but the public routes listed below;
- a second ordinary user (by API key, and by cookie session with its CSRF token) using the ids of
  the first user's objects (conversation, messages, a tool result, feedback, upload, document, API
  key, account): 404, never the object and never 403; administration (`/api/admin/...`: users,
  settings, stats, dashboard, release controls) answers 403;
- an administrator: admin routes open, the first user's objects still 404 (administrators manage
  accounts, they do not read conversations).

Every answer is a 2xx or a 4xx in OpenAI's error shape, never a 5xx; afterwards the first user's
objects are all still there, unchanged. A path parameter the walk has no owner's id for fails the
test: a new kind of object needs its entry in `owned` below."""

import re

import httpx
import pytest

from image_util import rendered
from server_util import Server, signup, sse_events

PUBLIC = {("post", "/api/auth/signup"), ("post", "/api/auth/login"), ("get", "/healthz"),
          ("get", "/metrics")}  # /metrics: administrators, or anyone on localhost (the walk runs there)
ADMIN_PREFIX = "/api/admin"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_dir):
    tmp = tmp_path_factory.mktemp("access")
    srv = Server(str(tiny_dir), f"sqlite:///{tmp / 'chatloop.db'}", log=tmp / "server.log",
                 env={"CHATLOOP_RATE_LIMIT_PER_MINUTE": "100000"}).start()
    yield srv
    srv.stop()


def bearer(client: httpx.Client) -> httpx.Client:
    key = client.post("/api/keys", json={"name": "walk"}).json()["key"]
    return httpx.Client(base_url=str(client.base_url), headers={"Authorization": f"Bearer {key}"}, timeout=60)


@pytest.fixture(scope="module")
def people(server):
    admin = signup(server.url, "walk-admin@example.com")  # the first account is the administrator
    alice = signup(server.url, "walk-alice@example.com")
    bob = signup(server.url, "walk-bob@example.com")
    return {"admin": admin, "alice": alice, "bob": bob}


@pytest.fixture(scope="module")
def owned(server, people):
    """Alice's objects, by the names routes give their ids."""
    from chatloop.store.conversations import add_tool_result
    from chatloop.store.db import Database

    alice = people["alice"]
    conv = alice.post("/api/conversations", json={"title": "alice's secret"}).json()
    with alice.stream("POST", f"/api/conversations/{conv['id']}/messages",
                      json={"content": "my secret question", "max_tokens": 4}) as r:
        events = sse_events(r)
    question, answer = events[0]["user_message"], events[-2]["message"]
    with alice.stream("POST", f"/api/conversations/{conv['id']}/messages",
                      json={"regenerate_from": question["id"], "max_tokens": 4}) as r:
        other = sse_events(r)[-2]["message"]
    r = alice.post(f"/api/messages/{answer['id']}/feedback", json={"rating": "down", "comment": "alice's comment"})
    assert r.status_code == 200
    db = Database(server.db_url)
    with db.session() as s:  # a tool result, as the tool loop stores one
        tool = add_tool_result(s, conv["id"], answer["id"], "call_1", "12:00 UTC",
                               {"name": "current_time", "arguments": {}, "is_error": False}).id
    db.dispose()
    upload = alice.post("/api/uploads", content=rendered("alice"), headers={"Content-Type": "image/png"}).json()
    document = alice.post("/api/documents", data={"conversation_id": conv["id"]},
                          files={"file": ("notes.md", b"# Alice's notes\n\nPrivate.", "text/markdown")}).json()
    key = alice.post("/api/keys", json={"name": "alice's key"}).json()
    return {"conv_id": conv["id"], "conversation_id": conv["id"], "message_id": answer["id"],
            "chosen_message_id": answer["id"], "rejected_message_id": other["id"], "current_leaf_id": answer["id"],
            "parent_id": question["id"], "attachments": [upload["id"]], "content": "hello",
            "upload_id": upload["id"], "document_id": document["id"], "key_id": key["id"],
            "user_id": alice.get("/api/me").json()["id"], "tool_message_id": tool, "question_id": question["id"],
            "_alice": {"conv": conv, "key": key["key"], "upload": upload, "document": document}}


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _value(schema: dict, prop: dict):
    """A plain valid value of a JSON Schema (for required fields the walk has no id for)."""
    prop = _resolve(schema, prop)
    if "anyOf" in prop:
        prop = next(_resolve(schema, p) for p in prop["anyOf"] if p.get("type") != "null")
    if "enum" in prop or "const" in prop:
        return prop.get("enum", [prop.get("const")])[0]
    kind = prop.get("type")
    if kind == "string":
        return "hello" if prop.get("format") != "email" else "someone@example.com"
    if kind == "boolean":
        return True
    if kind in ("integer", "number"):
        return max(prop.get("minimum", 1), 1)
    return [] if kind == "array" else {}


SHARED = {"model": "default"}  # path parameters that name what every user may see


def request_for(schema: dict, path: str, method: str, op: dict, ids: dict) -> tuple[dict, bool]:
    """httpx request arguments for one operation, and whether they name one of alice's objects."""
    used = False

    def owned_id(name: str):
        nonlocal used
        used = True
        return ids[name]

    url = path
    for name in re.findall(r"\{([^}]+)\}", path):
        if name in SHARED:  # everyone's (a served model): no owner to be refused
            url = url.replace("{" + name + "}", SHARED[name])
            continue
        assert name in ids, f"{method.upper()} {path}: no owner's object for the path parameter {name!r}"
        url = url.replace("{" + name + "}", owned_id(name))
    params = {p["name"]: owned_id(p["name"]) for p in op.get("parameters", [])
              if p["in"] == "query" and p["name"] in ids}
    kwargs: dict = {"params": params}
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        body_schema = _resolve(schema, content["application/json"]["schema"])
        body = {}
        for name, prop in body_schema.get("properties", {}).items():
            if name in ids:
                body[name] = ids[name] if name == "content" else owned_id(name)
            elif name in body_schema.get("required", []):
                body[name] = _value(schema, prop)
        kwargs["json"] = body
    elif "multipart/form-data" in content:
        form = _resolve(schema, content["multipart/form-data"]["schema"])
        kwargs["files"] = {"file": ("walk.txt", b"walk text", "text/plain")}
        kwargs["data"] = {n: owned_id(n) for n in form.get("properties", {}) if n in ids}
    elif content:
        kwargs["content"] = rendered("walk")
        kwargs["headers"] = {"Content-Type": "image/png"}
    return {"method": method.upper(), "url": url, **kwargs}, used


def operations(schema: dict):
    ops = [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()]
    return sorted(ops, key=lambda o: o[0] == "/api/auth/logout")  # signing out comes last


def check_error_shape(r: httpx.Response, where: str) -> None:
    assert r.status_code < 500, (where, r.status_code, r.text[:300])
    if r.status_code >= 400:
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, (where, r.text[:300])


def walk(server, who: str, client: httpx.Client, ids: dict, outcomes: dict) -> None:
    schema = httpx.get(server.url + "/openapi.json").json()
    for path, method, op in operations(schema):
        if (method, path) in PUBLIC:
            continue
        request, used = request_for(schema, path, method, op, ids)
        where = f"{who}: {method.upper()} {path}"
        r = client.request(**request)
        check_error_shape(r, where)
        outcomes[where] = r.status_code
        if who == "anonymous":
            assert r.status_code == 401, (where, r.status_code, r.text[:200])
            assert r.json()["error"]["type"] == "authentication_error"
        elif path.startswith(ADMIN_PREFIX) and not who.startswith("admin"):
            assert r.status_code == 403, (where, r.status_code, r.text[:200])
        elif used and not (who.startswith("admin") and path.startswith(ADMIN_PREFIX)):
            assert r.status_code == 404, (where, r.status_code, r.text[:200])
            assert r.json()["error"]["type"] == "not_found_error"
        else:
            assert r.status_code not in (401, 403), (where, r.status_code, r.text[:200])


def test_every_route_refuses_what_is_not_yours(server, people, owned):
    outcomes: dict[str, int] = {}
    anonymous = httpx.Client(base_url=server.url, timeout=60)
    bob = bearer(people["bob"])
    walk(server, "bob (key)", bob, owned, outcomes)
    regenerate = {k: v for k, v in owned.items() if k not in ("content", "parent_id", "attachments")}
    for message_id in ("tool_message_id", "question_id"):  # and a turn that regenerates
        walk(server, "bob (key)", bob, {**regenerate, "message_id": owned[message_id],
                                        "regenerate_from": owned["question_id"]}, outcomes)
    walk(server, "anonymous", anonymous, owned, outcomes)
    walk(server, "admin (key)", bearer(people["admin"]), owned, outcomes)
    walk(server, "bob (cookie + CSRF)", people["bob"], owned, outcomes)  # signs bob out at the end
    schema = httpx.get(server.url + "/openapi.json").json()
    assert len({w.split(": ")[1] for w in outcomes}) == sum(len(i) for i in schema["paths"].values()) - len(PUBLIC)

    alice, mine = people["alice"], owned["_alice"]
    conv = alice.get(f"/api/conversations/{owned['conv_id']}").json()
    assert conv["title"] == "alice's secret" and len(conv["messages"]) == 4  # question, two answers, tool result
    answer = next(m for m in conv["messages"] if m["id"] == owned["message_id"])
    assert answer["feedback"] == {"rating": "down", "reasons": [], "comment": "alice's comment"}
    assert alice.get("/api/conversations").json()[0]["current_leaf_id"] == owned["tool_message_id"]
    assert alice.get(f"/api/uploads/{owned['upload_id']}").status_code == 200
    assert [d["id"] for d in alice.get("/api/documents").json()] == [mine["document"]["id"]]
    assert httpx.get(server.url + "/api/me", headers={"Authorization": f"Bearer {mine['key']}"}).status_code == 200
    me = alice.get("/api/me").json()
    assert not me["disabled"] and not me["is_admin"]


def test_a_session_without_its_csrf_token_cannot_write_anywhere(server, people):
    """Every cookie-authenticated write the schema lists refuses a missing or forged token."""
    alice = people["alice"]
    schema = httpx.get(server.url + "/openapi.json").json()
    for forged in (None, "forged"):
        client = httpx.Client(base_url=server.url, cookies=alice.cookies, timeout=60,
                              headers={"X-CSRF-Token": forged} if forged else {})
        for path, method, op in operations(schema):
            if method not in ("post", "patch", "put", "delete") or (method, path) in PUBLIC:
                continue
            url = re.sub(r"\{[^}]+\}", "000000000000000000000000", path)
            r = client.request(method.upper(), url, json={})
            assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", (method, path, r.text)
    assert alice.get("/api/me").status_code == 200  # still signed in
