"""Serving by release channel: a server given a registered NAME serves its stable version, moves to a
promoted one within seconds without a restart and without breaking answers in flight, keeps a
canary sticky per conversation, asks for side-by-side votes, and two servers sharing one
PostgreSQL database switch together."""

import concurrent.futures
import json
import os
import subprocess
import sys
import time

import httpx
import openai
import pytest

from chatloop.registry import releases
from chatloop.registry.versions import import_ref
from chatloop.store.db import Database
from chatloop.store.models import ModelVersion
from conftest import home_sharing_default, make_tiny_model
from server_util import Server, new_key, postgres_database, signup, sse_events

SWITCH_SECONDS = 5.0


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chatloop", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def wait_until(predicate, what: str, timeout: float = SWITCH_SECONDS):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer, default_dir):
    """Versions m:1, m:2, m:3 (three different tiny models), m:1 stable, in a fresh home + SQLite."""
    tmp = tmp_path_factory.mktemp("releases")
    home = home_sharing_default(tmp / "home", default_dir)
    env_home = {"CHATLOOP_HOME": str(home)}
    db_url = f"sqlite:///{tmp / 'chatloop.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHATLOOP_HOME", str(home))
        db = Database(db_url)
        with db.session() as s:
            for seed in (1, 2, 3):
                import_ref(s, str(make_tiny_model(tmp / f"src{seed}", tokenizer, seed=seed, context=4096)), "m")
            releases.promote(s, "m", "1")
            # a second registered name the server was not told to serve (as `models pull` leaves one)
            import_ref(s, str(make_tiny_model(tmp / "src4", tokenizer, seed=4)), "qwen2.5-coder-0.5b-instruct")
            releases.promote(s, "qwen2.5-coder-0.5b-instruct", "1")
        db.dispose()
    return tmp, env_home, db_url


@pytest.fixture(scope="module")
def server(setup):
    tmp, env_home, db_url = setup
    srv = Server("m", db_url, env={**env_home, "CHATLOOP_VOTE_SHARE": "1.0"}, log=tmp / "server.log").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(server):
    client = signup(server.url, "admin@example.com")
    return client, new_key(client)


def ask(client: openai.OpenAI, **kw):
    return client.chat.completions.create(**{"model": "m", "messages": [{"role": "user", "content": "Say hello"}],
                                             "max_tokens": 4, "temperature": 0, **kw})


def action(admin_client: httpx.Client, verb: str, **body) -> dict:
    r = admin_client.post(f"/api/admin/releases/{verb}", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_name_serves_its_stable_version(server, admin):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=admin[1], max_retries=0)
    assert ask(client).model == "m:1"
    assert ask(client, model="default").model == "m:1"
    assert ask(client, model="m:2").model == "m:2"  # an exact version is served on request
    assert [m.id for m in client.models.list().data] == ["m", "qwen2.5-coder-0.5b-instruct"]
    menu = admin[0].get("/api/models").json()
    assert menu[0] == {"id": "m", "name": "default", "default": True, "stable": "m:1", "canary": None,
                       "canary_percent": 0}
    # every registered name can be picked, with its languages and size from the catalog
    assert menu[1]["name"] == "qwen2.5-coder-0.5b-instruct" and menu[1]["stable"] == "qwen2.5-coder-0.5b-instruct:1"
    assert "zh" in menu[1]["languages"] and menu[1]["params"] == "0.5B"
    assert ask(client, model="qwen2.5-coder-0.5b-instruct").model == "qwen2.5-coder-0.5b-instruct:1"


def test_promote_and_rollback_under_load_break_no_answer_in_flight(server, admin, setup):
    """8 chats stream while m:2 is promoted (CLI) and then rolled back (admin API): none fails, each
    finishes on the version it started with, and new requests follow each release within seconds."""
    _, env_home, db_url = setup
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=admin[1], max_retries=0)

    def long_stream():
        chunks = list(ask(client, stream=True, max_tokens=300, stream_options={"include_usage": True}))
        return chunks[0].model, chunks[-1].usage.completion_tokens, [c.choices[0].finish_reason for c in chunks
                                                                     if c.choices and c.choices[0].finish_reason]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        streams = [pool.submit(long_stream) for _ in range(8)]
        time.sleep(0.5)
        promoted = cli({**os.environ, **env_home}, "models", "promote", "m:2", "--force", "--reason", "test",
                       "--db", db_url, "--json")
        assert promoted.returncode == 0, promoted.stderr
        assert json.loads(promoted.stdout)["event"]["previous"] == "1"
        wait_until(lambda: ask(client).model == "m:2", "the promotion to reach the server")
        out = action(admin[0], "rollback", name="m", reason="worse")
        assert (out["action"], out["version"], out["actor"]) == ("rollback", "1", "admin@example.com")
        assert ask(client).model == "m:1"  # this server switches at once
        results = [future.result(timeout=300) for future in streams]
    assert all(model == "m:1" and tokens == 300 and finish == ["length"] for model, tokens, finish in results)
    events = admin[0].get("/api/admin/releases").json()["events"]
    assert [e["action"] for e in events[:2]] == ["rollback", "promote"] and events[1]["reason"] == "forced: test"
    action(admin[0], "canary", model="m:2", percent=100)  # m:2 is loaded again; ending the canary unloads it
    assert "m:2" in admin[0].get("/api/admin/stats").json()["engine"]["loaded"]
    action(admin[0], "rollback", name="m")
    wait_until(lambda: "m:2" not in admin[0].get("/api/admin/stats").json()["engine"]["loaded"],
               "the unused version to be unloaded")
    assert "m:1" in admin[0].get("/api/admin/stats").json()["engine"]["loaded"]  # the served one stays


def test_a_canary_is_sticky_per_conversation_and_asks_for_votes(server, admin):
    client = admin[0]
    action(client, "canary", model="m:3", percent=50)
    seen = {}
    for i in range(30):
        conv = client.post("/api/conversations", json={}).json()
        with client.stream("POST", f"/api/conversations/{conv['id']}/messages",
                           json={"content": f"hello {i}", "max_tokens": 3}) as r:
            seen[conv["id"]] = sse_events(r)[-2]["message"]["model"]
    assert set(seen.values()) == {"m:1", "m:3"} and 6 <= list(seen.values()).count("m:3") <= 24
    for conv_id, version in list(seen.items())[:8]:  # later turns stay on the conversation's version
        with client.stream("POST", f"/api/conversations/{conv_id}/messages",
                           json={"content": "and again", "max_tokens": 3}) as r:
            assert sse_events(r)[-2]["message"]["model"] == version
    # a client that can show two answers gets a side-by-side vote (the share is 100% here)
    conv = client.post("/api/conversations", json={}).json()
    with client.stream("POST", f"/api/conversations/{conv['id']}/messages",
                       json={"content": "which is better?", "max_tokens": 5, "compare": True}) as r:
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    events = events[:-1]
    pair = events[0]["assistant_messages"]
    assert len(pair) == 2 and pair[0]["duel_id"] == pair[1]["duel_id"] and all(m["model"] is None for m in pair)
    done = {e["message"]["id"]: e["message"] for e in events if e["type"] == "done"}
    assert set(done) == {m["id"] for m in pair} and all(m["model"] is None for m in done.values())
    deltas = {e["message_id"] for e in events if e["type"] == "delta"}
    assert deltas == set(done)
    vote = client.post("/api/comparisons", json={"chosen_message_id": pair[1]["id"],
                                                 "rejected_message_id": pair[0]["id"]})
    assert vote.status_code == 201
    again = client.post("/api/comparisons", json={"chosen_message_id": pair[0]["id"],
                                                  "rejected_message_id": pair[1]["id"]})
    assert again.status_code == 409
    shown = client.get(f"/api/conversations/{conv['id']}").json()
    answers = {m["id"]: m for m in shown["messages"] if m["role"] == "assistant"}
    assert {answers[m["id"]]["model"] for m in pair} == {"m:1", "m:3"}  # revealed after the vote
    assert shown["current_leaf_id"] == pair[1]["id"]
    board = client.get("/api/admin/dashboard?days=7").json()
    (canary,) = board["canaries"]
    assert (canary["stable"], canary["canary"], canary["percent"]) == ("m:1", "m:3", 50)
    winner = answers[pair[1]["id"]]["model"]
    assert canary["votes"]["votes"] == 1 and canary["votes"]["wins"] == (1 if winner == "m:3" else 0)
    assert canary["stable_stats"]["answers"] > 0 and canary["canary_stats"]["answers"] > 0
    assert sum(day["conversations"] for day in board["daily"]) >= 31 and board["daily"][-1]["active_users"] == 1
    csv_text = client.get("/api/admin/dashboard.csv?days=7&table=versions").text
    assert csv_text.splitlines()[0].startswith("version,answers,thumbs_up")
    action(client, "rollback", name="m")  # ends the canary
    conv = client.post("/api/conversations", json={}).json()
    with client.stream("POST", f"/api/conversations/{conv['id']}/messages",
                       json={"content": "hi", "max_tokens": 3, "compare": True}) as r:
        events = sse_events(r)
    assert "assistant_messages" not in events[0] and events[-2]["message"]["model"] == "m:1"


def test_promote_through_the_api_needs_evaluations_or_a_reason(server, admin):
    r = admin[0].post("/api/admin/releases/promote", json={"model": "m:2"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_evaluated"
    r = admin[0].post("/api/admin/releases/promote", json={"model": "m:2", "force": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "reason"
    other = signup(server.url, "user@example.com")
    assert other.get("/api/admin/releases").status_code == 403
    assert other.post("/api/admin/releases/rollback", json={"name": "m"}).status_code == 403


def test_two_servers_on_one_postgresql_database_switch_together(setup, tmp_path):
    tmp, env_home, _ = setup
    url, drop = postgres_database()
    db = Database(url)
    with db.session() as s:  # the versions registered in the SQLite registry, recorded in this one too
        for version in ("1", "2"):
            s.add(ModelVersion(name="m", version=version, path=str(tmp / "home" / "models" / "m" / version),
                               source="test"))
        releases.promote(s, "m", "1")
    servers = [Server("m", url, env=env_home, log=tmp_path / f"pg-{i}.log").start() for i in range(2)]
    try:
        keys = [new_key(signup(srv.url, f"pg{i}@example.com"))
                for i, srv in enumerate(servers)]
        clients = [openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0)
                   for srv, key in zip(servers, keys)]
        assert [ask(c).model for c in clients] == ["m:1", "m:1"]
        with db.session() as s:
            releases.promote(s, "m", "2", actor="ops")
        started = time.time()
        for c in clients:
            wait_until(lambda c=c: ask(c).model == "m:2", "both servers to serve m:2")
        assert time.time() - started < SWITCH_SECONDS
        with db.session() as s:
            releases.rollback(s, "m", actor="ops")
        for c in clients:
            wait_until(lambda c=c: ask(c).model == "m:1", "both servers to roll back")
    finally:
        for srv in servers:
            srv.stop()
        db.dispose()
        drop()
