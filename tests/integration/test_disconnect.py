"""A client that goes away frees its engine slot (or queue place) at once: streaming, waiting for a
JSON answer, or still queued before the first byte. The server runs one sequence at a time
(--max-batch 1) on a tiny model with an 8k context, so an unstopped answer would run for seconds."""

import json
import socket
import sqlite3
import time

import pytest

from conftest import make_tiny_model
from server_util import Server, new_key, signup

LONG = 6000  # tokens an answer would run to if nobody stopped it


@pytest.fixture(scope="module")
def server(tmp_path_factory, tokenizer):
    tmp = tmp_path_factory.mktemp("disconnect")
    model = make_tiny_model(tmp / "long-context", tokenizer, context=8192, name="tiny-long")
    srv = Server(str(model), f"sqlite:///{tmp / 'chatloop.db'}", log=tmp / "server.log")
    srv.proc_args = ["--max-batch", "1"]
    srv.start()
    srv.db_path = tmp / "chatloop.db"
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def key(server):
    return new_key(signup(server.url, "disconnect@example.com"))


def open_request(server, key: str, stream: bool) -> socket.socket:
    """Send a long chat request on a raw socket and leave the answer unread."""
    body = json.dumps({"model": "default", "messages": [{"role": "user", "content": "Go on forever"}],
                       "max_tokens": LONG, "temperature": 0, "stream": stream}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def wait_for(predicate, what: str, timeout: float = 10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def last_usage(server) -> tuple[int, int]:
    """(status, completion tokens) of the newest /v1 usage row."""
    with sqlite3.connect(server.db_path) as db:
        return db.execute("SELECT status_code, completion_tokens FROM usage ORDER BY created_at DESC LIMIT 1").fetchone()


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "non-streaming"])
def test_a_client_that_leaves_frees_its_slot(server, key, stream):
    sock = open_request(server, key, stream)
    if stream:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # the stream is flowing
    wait_for(lambda: server.engine_counts() == (1, 0), "the answer to run")
    time.sleep(0.3)
    sock.close()
    left = time.perf_counter()
    wait_for(lambda: server.engine_counts() == (0, 0), "the slot to be freed", timeout=3)
    freed_after = time.perf_counter() - left
    status, tokens = wait_for(lambda: last_usage(server) if last_usage(server)[0] == 499 else None, "a 499 usage row")
    assert tokens < LONG / 2, f"{tokens} tokens generated: the answer was not stopped"
    assert freed_after < 2.0


def test_a_queued_client_that_leaves_before_the_first_byte_frees_its_place(server, key):
    running = open_request(server, key, stream=True)
    wait_for(lambda: server.engine_counts() == (1, 0), "the first answer to run")
    queued = open_request(server, key, stream=False)
    wait_for(lambda: server.engine_counts() == (1, 1), "the second request to queue")
    queued.close()  # it never received a byte
    wait_for(lambda: server.engine_counts() == (1, 0), "the queue place to be freed", timeout=3)
    running.close()
    wait_for(lambda: server.engine_counts() == (0, 0), "the slot to be freed", timeout=3)
