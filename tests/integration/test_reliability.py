"""Nothing typed is lost, and faults are survived: kill -9 of the server during 8 streaming chats
(SQLite and PostgreSQL), clients that disconnect mid-stream, and PostgreSQL restarted under a
serving server (a private instance: the shared one is never stopped)."""

import json
import signal
import threading
import time

import httpx
import pytest
from sqlalchemy import select

from chatloop.store.db import Database
from chatloop.store.models import Base
from conftest import make_tiny_model
from server_util import Server, database_url, new_key, signup

pytestmark = pytest.mark.slow

LONG = "Write a very long story about a lighthouse keeper, with many chapters."


def first_deltas(client, conv_id: str, n: int) -> tuple[dict, list[str]]:
    """Start an answer, read its start event and `n` deltas, then drop the connection."""
    start, deltas = None, []
    with client.stream("POST", f"/api/conversations/{conv_id}/messages",
                       json={"content": LONG, "max_tokens": 1500, "temperature": 0}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event["type"] == "start":
                start = event
            elif event["type"] == "delta":
                deltas.append(event["text"])
                if len(deltas) >= n:
                    break
    return start, deltas


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


@pytest.fixture()
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'chatloop.db'}"


def test_client_disconnect_keeps_a_stopped_partial_answer_and_frees_the_slot(default_dir, db_url, tmp_path):
    server = Server("default", db_url, dtype="auto", log=tmp_path / "server.log").start()
    try:
        client = signup(server.url, "leave@example.com")
        conv = client.post("/api/conversations", json={}).json()
        start, deltas = first_deltas(client, conv["id"], 5)
        answer_id = start["assistant_message"]["id"]

        def stopped():
            msgs = client.get(f"/api/conversations/{conv['id']}").json()["messages"]
            answer = next(m for m in msgs if m["id"] == answer_id)
            return answer if answer["status"] != "streaming" else None

        answer = wait_for(stopped)
        assert answer["status"] == "stopped"
        assert answer["content"].startswith("".join(deltas)) and len(answer["content"]) < 4000

        def idle():
            text = httpx.get(server.url + "/metrics").text
            return "chatloop_engine_active_sequences 0.0" in text and "chatloop_active_streams 0.0" in text

        wait_for(idle)
        # the freed slot serves the next request right away
        conv2 = client.post("/api/conversations", json={}).json()
        with client.stream("POST", f"/api/conversations/{conv2['id']}/messages",
                           json={"content": "Hi", "max_tokens": 5}) as r:
            assert '"type": "done"' in r.read().decode()
    finally:
        server.stop()


# --- kill -9 during 8 streaming chats ---------------------------------------------------------------

STREAMS = 8


@pytest.fixture(scope="module")
def long_tiny(tmp_path_factory, tokenizer):
    """A tiny model with room for answers of thousands of tokens (they are still streaming when killed)."""
    return make_tiny_model(tmp_path_factory.mktemp("long-tiny"), tokenizer, context=4096)


def dump(url: str) -> dict[str, dict[str, dict]]:
    """Every row of every table, by primary key."""
    db = Database(url, migrate=False)
    try:
        with db.engine.connect() as conn:
            return {t.name: {"|".join(str(row._mapping[c.name]) for c in t.primary_key.columns): dict(row._mapping)
                             for row in conn.execute(select(t))}
                    for t in Base.metadata.sorted_tables}
    finally:
        db.dispose()


class Stream(threading.Thread):
    """One streaming chat that keeps reading until the connection dies."""

    def __init__(self, client: httpx.Client, conv_id: str, content: str, max_tokens: int = 3000):
        super().__init__(daemon=True)
        self.client, self.conv_id, self.content, self.max_tokens = client, conv_id, content, max_tokens
        self.start_event, self.deltas, self.done = None, [], None
        self.flowing = threading.Event()

    def run(self) -> None:
        try:
            with self.client.stream("POST", f"/api/conversations/{self.conv_id}/messages",
                                    json={"content": self.content, "max_tokens": self.max_tokens, "temperature": 0}) as r:
                for line in r.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    event = json.loads(line[6:])
                    if event["type"] == "start":
                        self.start_event = event
                    elif event["type"] == "delta":
                        self.deltas.append(event["text"])
                        if len(self.deltas) >= 3:
                            self.flowing.set()
                    elif event["type"] in ("done", "error"):
                        self.done = event
                        self.flowing.set()
        except httpx.HTTPError:
            pass  # the server was killed under us
        finally:
            self.flowing.set()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_kill_9_during_8_streaming_chats_keeps_every_question_and_marks_each_answer_interrupted(
        kind, long_tiny, tmp_path):
    url, drop = database_url(kind, tmp_path)
    env = {"CHATLOOP_HOME": str(tmp_path / "home")}
    server = Server(str(long_tiny), url, env=env, log=tmp_path / "server.log").start()
    try:
        # what was there before: another user's finished chat with feedback, a key, 8 empty conversations
        other = signup(server.url, "other@example.com")
        other_conv = other.post("/api/conversations", json={"title": "before"}).json()
        with other.stream("POST", f"/api/conversations/{other_conv['id']}/messages",
                          json={"content": "Hi", "max_tokens": 5}) as r:
            answer = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")][-1]["message"]
        other.post(f"/api/messages/{answer['id']}/feedback", json={"rating": "up"})
        other.post("/api/keys", json={"name": "k"})
        client = signup(server.url, "writer@example.com")
        convs = [client.post("/api/conversations", json={"title": f"chat {i}"}).json()["id"] for i in range(STREAMS)]
        before = dump(url)

        streams = [Stream(client, conv, f"{LONG} (chat {i})") for i, conv in enumerate(convs)]
        for s in streams:
            s.start()
        for s in streams:
            assert s.flowing.wait(120)
        assert all(s.done is None for s in streams), "an answer finished before the kill: make them longer"
        server.kill()  # SIGKILL while all 8 answers are being generated
        for s in streams:
            s.join(30)
        server = Server(str(long_tiny), url, env=env, log=tmp_path / "server.log").start()  # marks interrupted
        after = dump(url)
    finally:
        server.stop()
    try:
        new = {k: v for k, v in after["messages"].items() if k not in before["messages"]}
        assert len(new) == 2 * STREAMS
        for s, conv in zip(streams, convs, strict=True):
            user_id = s.start_event["user_message"]["id"]
            answer_id = s.start_event["assistant_message"]["id"]
            question, answer = new[user_id], new[answer_id]
            assert (question["conversation_id"], question["role"], question["content"]) == (conv, "user", s.content)
            assert (answer["parent_id"], answer["role"], answer["status"]) == (user_id, "assistant", "interrupted")
            assert "".join(s.deltas).startswith(answer["content"])  # what was saved is what was seen, or nothing
            changed = {k for k, v in after["conversations"][conv].items() if before["conversations"][conv][k] != v}
            assert changed <= {"current_leaf_id", "updated_at"}
        assert all(after["messages"][k] == v for k, v in before["messages"].items()), "an old message changed"
        for table, rows in before.items():
            if table not in ("messages", "conversations"):
                assert after[table] == rows, f"{table} changed"
        assert {k: v for k, v in after["conversations"].items() if k not in convs} == \
            {k: v for k, v in before["conversations"].items() if k not in convs}
    finally:
        if drop:
            drop()


# --- PostgreSQL restarted while serving ----------------------------------------------------------------

FAST = 5.0  # seconds: an answer while the database is down comes at least this quickly


def assert_unavailable(r: httpx.Response, started: float) -> None:
    assert time.monotonic() - started < FAST, f"took {time.monotonic() - started:.1f} s: it should fail fast"
    assert r.status_code == 503, r.text
    assert r.headers.get("retry-after", "").isdigit()
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "database_unavailable"


def test_postgresql_restart_fails_requests_fast_with_503_and_the_server_recovers_alone(long_tiny, tmp_path):
    from pg_private import PrivatePostgres

    pg = PrivatePostgres.create()
    server = None
    try:
        server = Server(str(long_tiny), pg.url, env={"CHATLOOP_HOME": str(tmp_path / "home")},
                        log=tmp_path / "server.log").start()
        pid = server.proc.pid
        client = signup(server.url, "pg@example.com")
        key = new_key(client)
        bearer = {"Authorization": f"Bearer {key}"}
        conv = client.post("/api/conversations", json={}).json()["id"]
        v1_body = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

        def requests() -> list[tuple[float, httpx.Response]]:
            out = []
            for method, path, kw in [
                ("GET", "/api/conversations", {}),
                ("POST", "/api/conversations", {"json": {}}),
                ("POST", f"/api/conversations/{conv}/messages", {"json": {"content": "Hello", "max_tokens": 4}}),
                ("GET", "/v1/models", {"headers": bearer}),
                ("POST", "/v1/chat/completions", {"headers": bearer, "json": v1_body}),
                ("POST", "/v1/chat/completions", {"headers": bearer, "json": {**v1_body, "stream": True}}),
            ]:
                started = time.monotonic()
                out.append((started, client.request(method, path, timeout=30, **kw)))
            return out

        assert all(r.status_code in (200, 201) for _, r in requests())
        in_flight = Stream(client, conv, LONG, max_tokens=400)  # it ends while the database is down
        in_flight.start()
        assert in_flight.flowing.wait(60) and in_flight.done is None

        pg.stop()  # as `systemctl restart postgresql` begins: every connection is cut
        for started, r in requests():
            assert_unavailable(r, started)
        in_flight.join(120)
        assert not in_flight.is_alive(), "a stream in flight hangs while the database is down"
        assert in_flight.done and in_flight.done["type"] == "done", "the answer in flight was cut off"
        answer = in_flight.done["message"]
        assert answer["content"] == "".join(in_flight.deltas) and answer["status"] == "complete"

        pg.start()
        wait_for(lambda: client.get("/api/conversations").status_code == 200, timeout=15)
        for _ in range(3):  # recovered for good, on every pooled connection: no restart
            assert [r.status_code for _, r in requests()] == [200, 201, 200, 200, 200, 200]

        def saved():  # the answer that finished during the outage is written once the database is back
            messages = client.get(f"/api/conversations/{conv}").json()["messages"]
            return next(m for m in messages if m["id"] == answer["id"])["status"] == "complete"

        wait_for(saved, timeout=30)
        stored = next(m for m in client.get(f"/api/conversations/{conv}").json()["messages"] if m["id"] == answer["id"])
        assert stored["content"] == answer["content"] and stored["completion_tokens"] == answer["completion_tokens"]
        assert server.proc.poll() is None and server.proc.pid == pid
    finally:
        if server:
            server.stop()
        pg.destroy()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_the_kernels_are_measured_ends_the_server_at_once(tiny_dir, tmp_path, sig):
    """docker stop / systemd send SIGTERM, a user presses Ctrl-C: during a model's first start (its
    kernels measured for a minute or two on the default model) uvicorn only noted the signal and the
    server went on until it had started. It now ends by that signal at once, having served nothing;
    the next start measures again and serves."""
    log = tmp_path / "server.log"
    srv = Server(str(tiny_dir), f"sqlite:///{tmp_path / 'db.sqlite'}", dtype="auto",
                 env={"CHATLOOP_HOME": str(tmp_path / "home")}, log=log)
    failures = []
    starting = threading.Thread(target=lambda: pytest.raises(RuntimeError, srv.start, 180) and failures.append(1))
    starting.start()
    deadline = time.time() + 170
    while "measuring weight formats" not in (log.read_text() if log.exists() else ""):
        assert time.time() < deadline, log.read_text()
        time.sleep(0.02)
    signaled = time.time()
    srv.proc.send_signal(sig)
    assert srv.proc.wait(30) == -sig and time.time() - signaled < 5
    starting.join(30)
    assert failures == [1]  # never healthy
    assert f"stopped ({signal.Signals(sig).name}) while starting up" in log.read_text()
    if sig == signal.SIGTERM:
        srv.start(timeout=180)  # nothing half-written is read back: it measures again, and serves
        try:
            assert "measuring weight formats" in log.read_text().split("stopped (")[1]
        finally:
            srv.stop()
