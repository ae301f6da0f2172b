"""Run the real server as a subprocess for integration tests, on SQLite or PostgreSQL."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

PG_URL = os.environ.get("CHATLOOP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url(kind: str, directory: Path) -> tuple[str, Callable[[], None] | None]:
    """(url, drop or None) of a fresh database: SQLite in `directory`, or one on the local PostgreSQL."""
    if kind == "sqlite":
        return f"sqlite:///{directory / 'chatloop.db'}", None
    return postgres_database()


def postgres_database() -> tuple[str, callable]:
    """A fresh database on the local PostgreSQL server; returns (url, drop). Skips when no server
    answers, unless CI is set (then it is a failure)."""
    import psycopg

    plain = PG_URL.replace("+psycopg", "")
    try:
        admin = psycopg.connect(plain, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL server at {plain}: {e}")
    name = "chatloop_test_" + secrets.token_hex(4)
    admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_URL.rpartition("/")

    def drop() -> None:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return f"{base}/{name}", drop


class Server:
    def __init__(self, model: str | list[str], db_url: str, dtype: str = "float32", env: dict | None = None,
                 log: Path | None = None):
        self.models = [model] if isinstance(model, str) else list(model)
        self.db_url, self.dtype = db_url, dtype
        self.env = {**os.environ, **(env or {})}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.proc_args: list[str] = []

    def start(self, timeout: float = 120) -> "Server":
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatloop", "serve", "--port", str(self.port),
             *[arg for m in self.models for arg in ("--model", m)],
             "--db", self.db_url, "--dtype", self.dtype, *self.proc_args],
            stdout=out, stderr=subprocess.STDOUT, env=self.env,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).json().get("status") == "ok":
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.proc.kill()  # a server that never came up must not outlive the test
        self.proc.wait()
        raise RuntimeError(f"server did not become healthy within {timeout} s; see {self.log}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def rss_kib(self) -> int:
        """The server process's resident memory (Linux /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS in /proc status")

    def engine_counts(self) -> tuple[int, int]:
        """(active, waiting) sequences over the engine pool, from /metrics (open to localhost)."""
        values = {}
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            name, _, value = line.partition(" ")
            values[name] = value
        return int(float(values["chatloop_engine_active_sequences"])), int(float(values["chatloop_engine_queue_depth"]))


def signup(base_url: str, email: str, password: str = "correct horse battery") -> httpx.Client:
    """A cookie-authenticated client that sends the CSRF header like the web UI."""
    client = httpx.Client(base_url=base_url, timeout=60)
    r = client.post("/api/auth/signup", json={"email": email, "password": password})
    assert r.status_code == 201, r.text
    client.headers["X-CSRF-Token"] = client.cookies["csrftoken"]
    return client


def new_key(client: httpx.Client, name: str = "k") -> str:
    """A new API key of the signed-in `client`'s account."""
    return client.post("/api/keys", json={"name": name}).json()["key"]


def sse_events(response: httpx.Response) -> list:
    import json

    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events
