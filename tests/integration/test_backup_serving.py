"""`chatloop backup` while the server serves and others keep writing, then `chatloop restore` into a
fresh home and database, then a server on the restored home: every user, conversation, message,
feedback, session and API key is there (a key still authenticates), the registered model serves
from the restored home alone, the writers never saw an error, and what they wrote meanwhile is in
the backup up to one instant (each writer's conversations are a prefix of what it wrote). SQLite
and PostgreSQL."""

import json
import shutil
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
from conftest import make_tiny_model
from server_util import Server, database_url, signup, sse_events

from chatloop.registry import releases
from chatloop.registry.versions import import_ref
from chatloop.store.db import Database

pytestmark = pytest.mark.slow
PASSWORD = "correct horse battery"


def cli(env: dict, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "chatloop", *args, "--json"], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def turn(client: httpx.Client, conv_id: str, **body) -> list:
    with client.stream("POST", f"/api/conversations/{conv_id}/messages",
                       json={"max_tokens": 6, "temperature": 0, **body}) as r:
        assert r.status_code == 200, r.read()
        events = sse_events(r)
    assert events[-1] == "[DONE]" and events[-2]["type"] == "done", events
    return events


def seed(url: str) -> dict:
    """Two users, each with a key, a conversation with a regenerated answer, thumbs and a /v1 call."""
    users = {}
    for name in ("ada", "bob"):
        email = f"{name}@example.com"
        client = signup(url, email, PASSWORD)
        key = client.post("/api/keys", json={"name": f"{name}-key"}).json()["key"]
        conv = client.post("/api/conversations", json={"model": "tiny", "title": f"{name}'s"}).json()
        first = turn(client, conv["id"], content=f"Hello, I am {name}.")
        user_msg, answer = first[0]["user_message"], first[-2]["message"]
        again = turn(client, conv["id"], regenerate_from=user_msg["id"])[-2]["message"]
        assert client.post(f"/api/messages/{answer['id']}/feedback", json={"rating": "down",
                                                                           "reasons": ["too_short"]}).status_code == 200
        assert client.post(f"/api/messages/{again['id']}/feedback", json={"rating": "up"}).status_code == 200
        v1 = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        v1.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        users[email] = {"client": client, "key": key, "conversation": conv["id"]}
    for user in users.values():  # what a restore must give back, as the API shows it
        client = user["client"]
        user["snapshot"] = client.get(f"/api/conversations/{user['conversation']}").json()
        user["keys"] = [{k: v for k, v in key.items() if k != "last_used_at"} for key in client.get("/api/keys").json()]
        user["cookies"] = dict(client.cookies)
    return users


class Writer(threading.Thread):
    """Signs up, then creates conversations and answers them until stopped, recording each commit."""

    def __init__(self, url: str, n: int):
        super().__init__(daemon=True)
        self.url, self.email = url, f"writer{n}@example.com"
        self.stop, self.failures, self.created = threading.Event(), [], []  # created: (title, committed_at)

    def run(self) -> None:
        client = signup(self.url, self.email, PASSWORD)
        i = 0
        while not self.stop.is_set():
            title = f"{self.email}-{i:05d}"
            try:
                r = client.post("/api/conversations", json={"model": "tiny", "title": title})
                if r.status_code != 201:
                    self.failures.append(r.text)
                    continue
                self.created.append((title, time.time()))
                turn(client, r.json()["id"], content=f"note {i}")
            except (httpx.HTTPError, AssertionError) as e:
                self.failures.append(repr(e))
            i += 1


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_backup_taken_while_serving_restores_every_conversation_and_key(kind, tmp_path, tokenizer, monkeypatch):
    home_a, home_b = tmp_path / "home-a", tmp_path / "home-b"
    url_a, drop_a = database_url(kind, home_a)
    url_b, drop_b = database_url(kind, home_b)
    monkeypatch.setenv("CHATLOOP_HOME", str(home_a))
    db = Database(url_a)
    with db.session() as s:
        import_ref(s, str(make_tiny_model(tmp_path / "tiny-src", tokenizer, context=2048)), "tiny")
        releases.promote(s, "tiny", "1")
    db.dispose()
    env_a = {"CHATLOOP_HOME": str(home_a), "CHATLOOP_RATE_LIMIT_PER_MINUTE": "100000"}
    server_a = Server("tiny", url_a, env=env_a, log=tmp_path / "server-a.log").start()
    server_b = None
    try:
        users = seed(server_a.url)
        writers = [Writer(server_a.url, n) for n in range(2)]
        for w in writers:
            w.start()
        time.sleep(2)
        started = time.time()
        report = cli({**server_a.env, **env_a}, "backup", str(tmp_path / "backup.tar"), "--db", url_a)
        finished = time.time()
        time.sleep(1)
        for w in writers:
            w.stop.set()
        for w in writers:
            w.join(60)
        assert not [f for w in writers for f in w.failures], "a writer failed while the backup ran"
        assert any(started <= t <= finished for w in writers for _, t in w.created), "no write during the backup"
        assert report["versions"] == ["tiny:1"] and report["counts"]["users"] == 4
        server_a.stop()
        shutil.rmtree(home_a / "models")  # the restored home must serve on its own

        env_b = {"CHATLOOP_HOME": str(home_b)}
        restored = cli({**server_a.env, **env_b}, "restore", str(tmp_path / "backup.tar"), "--db", url_b)
        assert restored["counts"] == report["counts"]
        server_b = Server("tiny", url_b, env=env_b, log=tmp_path / "server-b.log").start()

        for email, user in users.items():
            again = httpx.Client(base_url=server_b.url, timeout=60)
            assert again.post("/api/auth/login", json={"email": email, "password": PASSWORD}).status_code == 200
            assert again.get(f"/api/conversations/{user['conversation']}").json() == user["snapshot"]
            keys = [{k: v for k, v in key.items() if k != "last_used_at"} for key in again.get("/api/keys").json()]
            assert keys == user["keys"]
            old_session = httpx.Client(base_url=server_b.url, cookies=user["cookies"])
            assert old_session.get("/api/me").json()["email"] == email  # the session came back too
            v1 = openai.OpenAI(base_url=server_b.url + "/v1", api_key=user["key"], max_retries=0)
            answer = v1.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=3)
            assert answer.model == "tiny:1"

        for w in writers:
            client = httpx.Client(base_url=server_b.url, timeout=60)
            client.post("/api/auth/login", json={"email": w.email, "password": PASSWORD})
            convs = client.get("/api/conversations").json()
            titles = sorted(c["title"] for c in convs)
            written = [t for t, _ in w.created]
            assert titles == written[: len(titles)], "the backup is not one instant of this writer's work"
            assert len(titles) >= sum(1 for _, t in w.created if t < started)
            for c in convs:
                statuses = {m["status"] for m in client.get(f"/api/conversations/{c['id']}").json()["messages"]}
                assert statuses <= {"complete", "interrupted"}  # an answer mid-stream at the snapshot: interrupted
    finally:
        server_a.stop()
        if server_b:
            server_b.stop()
        for drop in (drop_a, drop_b):
            if drop:
                drop()
