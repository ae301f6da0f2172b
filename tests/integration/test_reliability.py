"""Nothing typed is lost: kill -9 mid-answer, and clients that disconnect mid-stream."""

import json
import time

import httpx
import pytest

from server_util import Server, signup

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


def test_kill_9_mid_answer_keeps_the_question_and_marks_the_answer_interrupted(default_dir, db_url, tmp_path):
    server = Server("default", db_url, dtype="auto", log=tmp_path / "server.log").start()
    client = signup(server.url, "kill@example.com")
    conv = client.post("/api/conversations", json={}).json()
    start, _ = first_deltas(client, conv["id"], 2)
    server.kill()  # SIGKILL while the answer is still being generated
    server = Server("default", db_url, dtype="auto", log=tmp_path / "server.log").start()
    try:
        again = httpx.Client(base_url=server.url)
        again.post("/api/auth/login", json={"email": "kill@example.com", "password": "correct horse battery"})
        messages = again.get(f"/api/conversations/{conv['id']}").json()["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[0]["content"] == LONG and messages[0]["id"] == start["user_message"]["id"]
        assert messages[1]["status"] == "interrupted"
    finally:
        server.stop()


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
