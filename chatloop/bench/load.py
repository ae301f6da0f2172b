"""`chatloop bench load`: mixed traffic from N virtual users through the real HTTP API, for M minutes.

    chatloop bench load --users 8 --minutes 1                   # starts its own server (default model)
    chatloop bench load --users 8 --minutes 0.5 --model PATH --json
    chatloop bench load --users 16 --minutes 30 --url http://host:8000 --email me@x.org --password-stdin

Each virtual user signs up (or, with --email, signs in to that account: then all share it, and its
rate limit, so expect 429 rejections at high --users), makes itself an API key,
then until the time is up picks one action after another with a short pause between them: a new
chat or a next message streamed through the app API, a regenerated answer with a preference
between the two, thumbs up or down, `/v1/chat/completions` with the official `openai` client
(streamed and not), a stream it leaves after the first words (a client that disconnects), and
reading its conversation list and one conversation. What is measured and how failures,
rejections (429/503 with Retry-After) and disconnects are told apart: bench/load_stats.py.

Without --url it starts `chatloop serve` on a free port with a throw-away SQLite database (models
come from CHATLOOP_HOME) and samples that process's RSS; with --url, pass --pid to sample the
server's. The keys it made are revoked at the end.
"""

import asyncio
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chatloop.bench.decode import PROMPTS
from chatloop.bench.load_stats import Outcome, Recorder, RssSampler, report
from chatloop.bench.serve import _free_port, wait_healthy
from chatloop.errors import ChatloopError, UsageError

ACTIONS = {"chat": 30, "regenerate": 10, "feedback": 10, "v1": 15, "v1_stream": 15, "disconnect": 8, "browse": 12}
THINK_S = 0.5  # the longest pause between two actions of one user
MAX_TURNS = 6  # then a user starts a new chat: conversations (and prompts) stop growing, as with real users
REJECTED = (429, 503)


def _kind_of(status: int, headers) -> tuple[str, float]:
    """(result, seconds to wait) for an HTTP status and its headers."""
    if 200 <= status < 300:
        return "ok", 0.0
    retry = headers.get("retry-after")
    if status in REJECTED and retry is not None:
        try:
            return "rejected", min(float(retry), 10.0)
        except ValueError:
            return "rejected", 1.0
    return "failed", 0.0


class VirtualUser:
    def __init__(self, n: int, base_url: str, rec: Recorder, deadline: float, max_tokens: int, creds, seed: int):
        self.n, self.base_url, self.rec, self.deadline, self.max_tokens = n, base_url, rec, deadline, max_tokens
        self.creds, self.rng = creds, random.Random(seed * 1000 + n)
        self.chats: list[dict] = []  # {"id", "turns", "user_msg", "answer"}: the user's conversations

    # --- plumbing -------------------------------------------------------------------------------------

    def _prompt(self) -> str:
        return self.rng.choice(PROMPTS)

    async def _request(self, kind: str, method: str, path: str, **kw):
        """One plain request, recorded; returns the response when it succeeded."""
        import httpx

        t0 = time.monotonic()
        try:
            r = await self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            self.rec.add(Outcome(kind, "failed", "transport", (time.monotonic() - t0) * 1000, detail=repr(e)))
            return None
        result, wait = _kind_of(r.status_code, r.headers)
        self.rec.add(Outcome(kind, result, str(r.status_code), (time.monotonic() - t0) * 1000,
                             detail=r.text[:200] if result == "failed" else ""))
        if wait:
            await asyncio.sleep(wait)
        return r if result == "ok" else None

    async def _turn(self, kind: str, conv_id: str, body: dict, leave_early: bool = False) -> dict | None:
        """A streamed app-API turn; returns the done event's message."""
        import httpx

        t0, ttft, start, done, finished = time.monotonic(), None, None, None, False
        body = {"max_tokens": self.max_tokens, **body}
        try:
            async with self.http.stream("POST", f"/api/conversations/{conv_id}/messages", json=body) as r:
                if r.status_code != 200:
                    await r.aread()
                    result, wait = _kind_of(r.status_code, r.headers)
                    self.rec.add(Outcome(kind, result, str(r.status_code), (time.monotonic() - t0) * 1000,
                                         detail=r.text[:200]))
                    await asyncio.sleep(wait)
                    return None
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        finished = True
                        break
                    if not line.startswith("data: {"):
                        continue
                    event = json.loads(line[6:])
                    if event["type"] == "start":
                        start = event
                    elif event["type"] == "delta" and ttft is None:
                        ttft = (time.monotonic() - t0) * 1000
                        if leave_early:
                            break  # closing the stream here is the disconnect
                    elif event["type"] == "done":
                        done = event["message"]
                    elif event["type"] == "error":
                        self.rec.add(Outcome(kind, "failed", "stream_error", (time.monotonic() - t0) * 1000,
                                             detail=str(event.get("error"))[:200]))
                        return None
        except httpx.HTTPError as e:
            self.rec.add(Outcome(kind, "failed", "transport", (time.monotonic() - t0) * 1000, detail=repr(e)))
            return None
        latency = (time.monotonic() - t0) * 1000
        if leave_early and not finished:
            self.rec.add(Outcome(kind, "disconnect", "200", latency, ttft))
            return None
        if not (finished and done and start):
            self.rec.add(Outcome(kind, "failed", "stream_incomplete", latency, ttft, detail="no done/[DONE]"))
            return None
        self.rec.add(Outcome(kind, "ok", "200", latency, ttft, done.get("completion_tokens") or 0))
        return {"user_msg": start["user_message"]["id"] if start.get("user_message") else None, "answer": done["id"]}

    async def _v1(self, stream: bool) -> None:
        import openai

        kind, t0, ttft, tokens = ("v1_stream" if stream else "v1"), time.monotonic(), None, 0
        messages = [{"role": "user", "content": self._prompt()}]
        try:
            if stream:
                chunks = await self.v1.chat.completions.create(
                    model="default", messages=messages, max_tokens=self.max_tokens, stream=True,
                    stream_options={"include_usage": True})
                async for chunk in chunks:
                    if ttft is None and chunk.choices and chunk.choices[0].delta.content:
                        ttft = (time.monotonic() - t0) * 1000
                    if chunk.usage is not None:
                        tokens = chunk.usage.completion_tokens
            else:
                answer = await self.v1.chat.completions.create(model="default", messages=messages,
                                                               max_tokens=self.max_tokens)
                tokens = answer.usage.completion_tokens
        except openai.APIStatusError as e:
            result, wait = _kind_of(e.status_code, e.response.headers)
            self.rec.add(Outcome(kind, result, str(e.status_code), (time.monotonic() - t0) * 1000, detail=str(e)[:200]))
            await asyncio.sleep(wait)
            return
        except (openai.APIError, ValueError) as e:  # connection errors, timeouts, a broken stream
            self.rec.add(Outcome(kind, "failed", "transport", (time.monotonic() - t0) * 1000, detail=repr(e)[:200]))
            return
        self.rec.add(Outcome(kind, "ok", "200", (time.monotonic() - t0) * 1000, ttft, tokens))

    # --- what a user does -----------------------------------------------------------------------------

    async def _open_chat(self) -> dict | None:
        """A conversation of this user's with room for another turn (sometimes a new one)."""
        open_chats = [c for c in self.chats if c["turns"] < MAX_TURNS]
        if not open_chats or self.rng.random() < 0.3:
            r = await self._request("new_chat", "POST", "/api/conversations", json={})
            if r is None:
                return None
            self.chats.append({"id": r.json()["id"], "turns": 0})
            open_chats = self.chats[-1:]
        conv = self.rng.choice(open_chats)
        conv["turns"] += 1  # counted before it ends: a turn that failed or was left still joined the branch
        return conv

    async def chat(self) -> None:
        conv = await self._open_chat()
        turn = conv and await self._turn("chat", conv["id"], {"content": self._prompt()})
        if turn:
            conv.update(turn)

    async def regenerate(self) -> None:
        answered = [c for c in self.chats if c.get("user_msg")]
        if not answered:
            return await self.chat()
        conv = self.rng.choice(answered)
        turn = await self._turn("regenerate", conv["id"], {"regenerate_from": conv["user_msg"]})
        if turn:
            pair = [turn["answer"], conv["answer"]]
            self.rng.shuffle(pair)
            await self._request("comparison", "POST", "/api/comparisons",
                                json={"chosen_message_id": pair[0], "rejected_message_id": pair[1]})
            conv["answer"] = turn["answer"]

    async def feedback(self) -> None:
        answered = [c for c in self.chats if c.get("answer")]
        if not answered:
            return await self.chat()
        body = self.rng.choice([{"rating": "up", "reasons": ["helpful"]},
                                {"rating": "down", "reasons": ["too_short"], "comment": "more, please"}])
        await self._request("feedback", "POST", f"/api/messages/{self.rng.choice(answered)['answer']}/feedback",
                            json=body)

    async def disconnect(self) -> None:
        conv = await self._open_chat()
        if conv:
            await self._turn("disconnect", conv["id"], {"content": self._prompt(), "max_tokens": max(self.max_tokens, 256)},
                             leave_early=True)

    async def browse(self) -> None:
        if await self._request("browse", "GET", "/api/conversations") is not None and self.chats:
            await self._request("browse", "GET", f"/api/conversations/{self.rng.choice(self.chats)['id']}")

    async def sign_in(self) -> str | None:
        """Sign up (or in, with credentials) and make an API key; returns the key."""
        if self.creds:
            email, password = self.creds
            r = await self._request("account", "POST", "/api/auth/login", json={"email": email, "password": password})
        else:
            email = f"load-{secrets.token_hex(4)}-{self.n}@example.com"
            r = await self._request("account", "POST", "/api/auth/signup",
                                    json={"email": email, "password": secrets.token_urlsafe(12)})
        if r is None:
            return None
        self.http.headers["X-CSRF-Token"] = self.http.cookies["csrftoken"]
        r = await self._request("account", "POST", "/api/keys", json={"name": f"bench-load-{self.n}"})
        if r is None:
            return None
        self.key_id = r.json()["id"]
        return r.json()["key"]

    async def run(self) -> None:
        import httpx
        import openai

        async with httpx.AsyncClient(base_url=self.base_url, timeout=300) as self.http:
            key = await self.sign_in()
            if not key:
                return
            self.v1 = openai.AsyncOpenAI(base_url=self.base_url + "/v1", api_key=key, max_retries=0, timeout=300)
            actions = {"v1": lambda: self._v1(False), "v1_stream": lambda: self._v1(True)}
            names, weights = list(ACTIONS), list(ACTIONS.values())
            try:
                while time.monotonic() < self.deadline:
                    name = self.rng.choices(names, weights)[0]
                    await (actions[name]() if name in actions else getattr(self, name)())
                    await asyncio.sleep(self.rng.uniform(0, THINK_S))
            finally:
                await self.v1.close()
                await self._request("account", "DELETE", f"/api/keys/{self.key_id}")


async def _drive(base_url: str, users: int, seconds: float, max_tokens: int, creds,
                 seed: int) -> tuple[Recorder, float]:
    rec = Recorder()
    t0 = time.monotonic()
    crowd = [VirtualUser(n, base_url, rec, t0 + seconds, max_tokens, creds, seed) for n in range(users)]
    await asyncio.gather(*(u.run() for u in crowd))
    return rec, time.monotonic() - t0


def run_load_bench(users: int, minutes: float, *, model: str = "default", dtype: str = "auto", url: str | None = None,
                   email: str | None = None, password: str | None = None, pid: int | None = None,
                   max_tokens: int = 48, seed: int = 0) -> dict:
    """Drive the traffic and return the report (bench/load_stats.py `report`)."""
    if users < 1 or minutes <= 0:
        raise UsageError("--users must be at least 1 and --minutes more than 0")
    if email and password is None:
        raise UsageError("--email needs the account's password (--password-stdin)")
    seconds = minutes * 60
    creds = (email, password) if email else None
    with tempfile.TemporaryDirectory(prefix="chatloop-load-") as tmp:
        server = None
        if url is None:
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            env = {**os.environ, "CHATLOOP_DATABASE_URL": f"sqlite:///{Path(tmp) / 'load.db'}"}
            log = Path(tmp) / "server.log"
            with open(log, "wb") as out:
                server = subprocess.Popen([sys.executable, "-m", "chatloop", "serve", "--port", str(port),
                                           "--model", model, "--dtype", dtype], env=env, stdout=out,
                                          stderr=subprocess.STDOUT)
            pid = server.pid
        try:
            try:
                wait_healthy(url, 300)
            except RuntimeError as e:
                tail = log.read_text(errors="replace")[-2000:] if server else ""
                raise ChatloopError(f"{e}\n{tail}") from e
            import httpx

            served = httpx.get(url + "/healthz", timeout=10).json().get("model")
            sampler = RssSampler(pid, every_s=max(1.0, seconds / 120))
            sampler.start()
            rec, duration = asyncio.run(_drive(url, users, seconds, max_tokens, creds, seed))
            sampler.stop()
            if server is not None and server.poll() is not None:
                raise ChatloopError(f"the server died during the run (exit {server.returncode})")
        finally:
            if server is not None:
                server.terminate()
                try:
                    server.wait(30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
    meta = {"url": url, "model": served, "users": users, "minutes": minutes, "max_tokens": max_tokens}
    return report(rec, duration, sampler.summary(warmup_s=min(60.0, seconds * 0.2)), meta)
