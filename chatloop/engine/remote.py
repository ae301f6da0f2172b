"""A remote engine: a model served by any OpenAI-compatible server (vLLM, llama.cpp's server,
another chatloop), behind the interface the chat service uses for the local engine.

    backend = RemoteBackend.parse("openai:http://gpu-box:8000/v1", key=None)
    model = backend.model("default")              # the first model the remote lists; or name one
    engine = RemoteEngine(model)
    handle = engine.submit_chat({"messages": [...]}, SamplingParams(temperature=0), on_event=...)
    for event in handle: ...                      # StreamEvents, then the GenerationResult

`chatloop serve --backend openai:URL` serves the remote's models with this (docs/remote-engines.md).
The remote renders, tokenizes and batches; this side keeps the product: accounts, conversations,
feedback, tools, metrics. Each choice is one streamed request (`stream_options.include_usage`, so
the usage is the remote's own count). The remote's structured tool calls come back as the text
our tool parser reads (`<tool_call>{...}</tool_call>`, models/tool_calls.py), so /v1 and the app
API shape them as they do a local model's calls.

The answers name the engine `MODEL@HOST` (`model_id`: the remote's model id at the server's
address), so stored answers and feedback say which deployment answered. Cancelling a handle closes
its HTTP request: the remote frees the sequence (vLLM and chatloop abort on disconnect).

Errors: until the remote has answered a request's headers, `handle.opened` (a concurrent Future)
is pending; it then holds None, or the error in our terms — 400/422 a UsageError (the remote's
message), 404 a ModelRefError, 429 and 503 EngineOverloaded (passed on as our 503 with
Retry-After), anything else a RemoteEngineError (502). The chat service awaits it before it starts
a response, so those reach the client as real statuses. A failure later ends the answer with
finish_reason "error". I/O runs on the engine's own thread and event loop (like the local engine's
thread), so a slow remote never blocks the server's event loop and synchronous callers work too.
"""

import asyncio
import concurrent.futures
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from urllib.parse import urlsplit

import httpx

from chatloop.engine.sampling import SamplingParams
from chatloop.engine.scheduler import GenerationResult, RequestHandle, StreamEvent
from chatloop.errors import ChatloopError, EngineOverloaded, ModelRefError, RemoteEngineError, UsageError
from chatloop.models.tool_calls import render_calls

log = logging.getLogger(__name__)

PREFIX = "openai:"
TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=60.0)  # read: the gap between two chunks
FINISH = {"stop": "stop", "length": "length", "tool_calls": "stop", "function_call": "stop"}


@dataclass(frozen=True)
class RemoteModel:
    """One model on a remote OpenAI-compatible server (what the engine pool keys an engine by)."""

    base_url: str  # ending in /v1
    model: str  # the remote's model id, sent as `model`
    key: str | None = field(default=None, repr=False)
    kind = "remote"

    @property
    def name(self) -> str:
        return self.model

    @property
    def model_id(self) -> str:
        return f"{self.model}@{urlsplit(self.base_url).netloc}"


class RemoteBackend:
    """A remote server: its base URL and key, and the models it lists (read once)."""

    def __init__(self, base_url: str, key: str | None = None):
        self.base_url, self.key = base_url.rstrip("/"), key or None
        self._listed: list[str] | None = None

    @classmethod
    def parse(cls, spec: str, key: str | None = None) -> "RemoteBackend":
        """`openai:URL` (the URL with or without its /v1)."""
        if not spec.startswith(PREFIX):
            raise UsageError(f"unknown backend {spec!r}: use openai:URL (an OpenAI-compatible server)",
                             param="backend")
        url = spec[len(PREFIX):].strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"the backend URL {url!r} is not an http(s) URL: use openai:http://HOST:PORT/v1",
                             param="backend")
        if parts.path.rstrip("/") == "":
            url = url.rstrip("/") + "/v1"
        return cls(url, key)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def listed(self) -> list[str]:
        """The model ids the remote's GET /models lists (fails with an actionable error if it is down)."""
        if self._listed is None:
            try:
                r = httpx.get(self.base_url + "/models", headers=self.headers(), timeout=TIMEOUT)
            except httpx.HTTPError as e:
                raise RemoteEngineError(f"cannot reach the remote engine at {self.base_url}: {e}") from e
            if r.status_code != 200:
                raise remote_error(r.status_code, r.content, self.base_url)
            self._listed = [m["id"] for m in r.json().get("data", [])]
        return self._listed

    def model(self, ref: str) -> RemoteModel:
        """The remote model `ref` names ('default': the first one the remote lists)."""
        listed = self.listed()
        if ref == "default":
            if not listed:
                raise ModelRefError(f"the remote engine at {self.base_url} lists no models; name one with --model")
            return RemoteModel(self.base_url, listed[0], self.key)
        if ref not in listed:  # an alias it accepts may be unlisted (chatloop's `default`, say): it decides
            log.warning("the remote engine at %s does not list %r (it lists %s)", self.base_url, ref, listed)
        return RemoteModel(self.base_url, ref, self.key)


def remote_error(status: int, body: bytes, where: str) -> ChatloopError:
    """A remote's error response in our terms (its message kept)."""
    try:
        error = json.loads(body).get("error")
        message = error.get("message") if isinstance(error, dict) else str(error or body[:300].decode())
        param = error.get("param") if isinstance(error, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
    except (ValueError, AttributeError, UnicodeDecodeError):
        message, param, code = body[:300].decode(errors="replace"), None, None
    message = message or f"HTTP {status}"
    if status in (400, 413, 422):
        return UsageError(message, param=param, code=code)
    if status == 404:
        return ModelRefError(f"{message} (the remote engine at {where})", param="model", code="model_not_found")
    if status in (429, 503):
        return EngineOverloaded(f"the remote engine at {where} is overloaded ({status}): {message}")
    return RemoteEngineError(f"the remote engine at {where} answered {status}: {message}")


class RemoteHandle(RequestHandle):
    """A request on a remote engine; `opened` resolves once the remote accepted it (or failed)."""

    def __init__(self, request_id: int, on_event, loop: asyncio.AbstractEventLoop):
        super().__init__(request_id, on_event)
        self.opened: concurrent.futures.Future = concurrent.futures.Future()
        self._loop = loop
        self._task: asyncio.Task | None = None

    def cancel(self) -> None:
        super().cancel()
        try:
            self._loop.call_soon_threadsafe(self._interrupt)
        except RuntimeError:  # the engine's loop is closed: nothing is running
            pass

    def _interrupt(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


@dataclass
class _Answer:
    """One streamed answer as it arrives."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, dict] = field(default_factory=dict)
    finish: str = "stop"
    usage: dict = field(default_factory=dict)
    chunks: int = 0
    first_at: float | None = None
    asked_logprobs: bool = False
    logprobs: list[dict] = field(default_factory=list)  # the remote's logprobs.content entries, where asked

    def feed(self, chunk: dict) -> str:
        """Take one chunk; returns its new content."""
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        content = ""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content += delta.get("content") or ""
            if self.asked_logprobs:
                self.logprobs += _entries((choice.get("logprobs") or {}).get("content"))
            for call in delta.get("tool_calls") or []:
                slot = self.calls.setdefault(call.get("index", len(self.calls)), {"name": "", "arguments": ""})
                fn = call.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish = FINISH.get(choice["finish_reason"], "stop")
            if content or delta.get("tool_calls"):
                self.chunks += 1
                self.first_at = self.first_at or time.perf_counter()
        self.text.append(content)
        return content

    def rendered_calls(self) -> str:
        """The calls as our tool parser reads them (arguments that are not JSON stay as text)."""
        calls = [{"function": c} for _, c in sorted(self.calls.items())]
        try:
            return render_calls(calls, "the remote's answer")
        except UsageError:
            return "".join(f"<tool_call>{c['function']}</tool_call>" for c in calls)


class RemoteEngine:
    remote = True  # serving/plan.py hands it the request's messages, not token ids
    accepts_images = False  # images reach it as their OCR text (serving/images.py)
    processor = None
    tokenizer = None
    max_len = None

    def __init__(self, ref: RemoteModel, backend: RemoteBackend | None = None):
        self.ref, self.model_id = ref, ref.model_id
        self.backend = backend or RemoteBackend(ref.base_url, ref.key)
        self.loaded = SimpleNamespace(dtype="remote", timings={})
        self._ids = itertools.count(1)
        self._inflight: set[RemoteHandle] = set()
        self._counts = {"requests": 0, "errors": 0, "prompt_tokens": 0, "prefix_cached_tokens": 0}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chatloop-remote", daemon=True)
        self._thread.start()
        self._client = self._call(self._open_client())

    @classmethod
    def start(cls, ref: RemoteModel, dtype: str = "auto", **_) -> "RemoteEngine":
        """The pool's constructor (dtype, batch and cache sizes are the remote's business)."""
        return cls(ref)

    def _call(self, coro, timeout: float | None = 30):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _open_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        return httpx.AsyncClient(base_url=self.ref.base_url, headers=self.backend.headers(), timeout=TIMEOUT,
                                 limits=limits)

    # --- caller side (any thread) ------------------------------------------------------------

    def submit(self, prompt_ids, params, on_event=None, pixels=None):
        raise UsageError(f"{self.model_id} is a remote engine: it takes messages (submit_chat), not token ids")

    def submit_chat(self, body: dict, params: SamplingParams,
                    on_event: Callable[[StreamEvent], None] | None = None) -> RemoteHandle:
        """Stream one answer to `body` (messages, and tools, tool_choice, response_format if any)."""
        handle = RemoteHandle(next(self._ids), on_event, self._loop)
        payload = {**body, "model": self.ref.model, "stream": True, "stream_options": {"include_usage": True},
                   **sampling(params)}
        self._loop.call_soon_threadsafe(self._spawn, handle, payload, params)
        return handle

    def generate(self, body: dict, params: SamplingParams) -> GenerationResult:
        return self.submit_chat(body, params).wait()

    def stats(self) -> dict:
        return {"active": len(self._inflight), "waiting": 0, "remote": self.ref.base_url, **self._counts}

    def shutdown(self, timeout: float = 10.0) -> None:
        for handle in list(self._inflight):
            handle.cancel()
        try:
            self._call(self._close(), timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    async def _close(self) -> None:
        deadline = time.monotonic() + 5
        while self._inflight and time.monotonic() < deadline:  # let cancelled answers report
            await asyncio.sleep(0.01)
        await self._client.aclose()

    # --- the engine's loop ---------------------------------------------------------------------

    def _spawn(self, handle: RemoteHandle, payload: dict, params: SamplingParams) -> None:
        self._inflight.add(handle)
        self._loop.create_task(self._run(handle, payload, params))

    async def _run(self, handle: RemoteHandle, payload: dict, params: SamplingParams) -> None:
        submitted, answer = time.perf_counter(), _Answer(asked_logprobs=params.logprobs is not None)
        reason, error, input_error = "stop", None, False
        try:
            if handle.cancelled:
                raise asyncio.CancelledError
            handle._task = asyncio.current_task()
            async with asyncio.timeout(params.max_time_s):
                await self._stream(handle, payload, answer)
            reason = answer.finish
        except asyncio.CancelledError:
            reason = "cancelled"
        except TimeoutError:
            reason = "length"  # the generation-time budget, as the local engine ends it
        except (ChatloopError, httpx.HTTPError, ValueError) as e:
            if not isinstance(e, ChatloopError):
                e = RemoteEngineError(f"the remote engine at {self.ref.base_url} failed: {type(e).__name__}: {e}")
            reason, error, input_error = "error", str(e), isinstance(e, UsageError)
            self._counts["errors"] += 1
            if not handle.opened.done():
                handle.opened.set_exception(e)
        finally:
            self._inflight.discard(handle)
        if not handle.opened.done():
            handle.opened.set_result(None)  # cancelled or timed out before the remote answered
        self._finish(handle, answer, reason, error, input_error, submitted)

    async def _stream(self, handle: RemoteHandle, payload: dict, answer: _Answer) -> None:
        self._counts["requests"] += 1
        async with self._client.stream("POST", "/chat/completions", json=payload) as r:
            if r.status_code != 200:
                raise remote_error(r.status_code, await r.aread(), self.ref.base_url)
            handle.opened.set_result(None)
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if chunk.get("error"):
                    raise remote_error(500, data.encode(), self.ref.base_url)
                known = len(answer.logprobs)
                text = answer.feed(chunk)
                if text or len(answer.logprobs) > known:
                    handle._emit(StreamEvent(text=text, token_ids=[], logprobs=answer.logprobs[known:]))

    def _finish(self, handle, answer: _Answer, reason: str, error, input_error: bool, submitted: float) -> None:
        tail = answer.rendered_calls() if answer.calls else ""
        usage = answer.usage
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        self._counts["prompt_tokens"] += usage.get("prompt_tokens") or 0
        self._counts["prefix_cached_tokens"] += cached
        result = GenerationResult(
            text="".join(answer.text) + tail, token_ids=[], finish_reason=reason,
            prompt_tokens=usage.get("prompt_tokens") or 0,
            completion_tokens=usage.get("completion_tokens") or answer.chunks,  # chunks: a remote without usage
            model=self.model_id, ttft_s=None if answer.first_at is None else answer.first_at - submitted,
            latency_s=time.perf_counter() - submitted, error=error, input_error=input_error, cached_tokens=cached,
            logprobs=answer.logprobs if answer.asked_logprobs else None)
        handle._emit(StreamEvent(text=tail, token_ids=[], result=result))


def _entry(raw) -> dict | None:
    """A remote's logprobs entry as ours (`token`, `logprob`, `bytes`; None where it is not one)."""
    if not (isinstance(raw, dict) and isinstance(raw.get("token"), str)
            and isinstance(raw.get("logprob"), int | float) and not isinstance(raw.get("logprob"), bool)):
        return None
    data = raw.get("bytes")
    ok = isinstance(data, list) and all(isinstance(b, int) and 0 <= b < 256 for b in data)
    return {"token": raw["token"], "logprob": raw["logprob"], "bytes": data if ok else list(raw["token"].encode())}


def _entries(raw) -> list[dict]:
    """A remote's logprobs.content, entries it sent malformed dropped (one would fail the answer)."""
    out = []
    for item in raw if isinstance(raw, list) else []:
        entry = _entry(item)
        if entry is not None:
            top = item.get("top_logprobs")
            entry["top_logprobs"] = [t for t in map(_entry, top if isinstance(top, list) else []) if t]
            out.append(entry)
    return out


def sampling(params: SamplingParams) -> dict:
    """A choice's sampling parameters as OpenAI request fields (a max_tokens of None: the remote's default)."""
    out = {"temperature": params.temperature, "top_p": params.top_p,
           "frequency_penalty": params.frequency_penalty, "presence_penalty": params.presence_penalty}
    if params.max_tokens is not None:
        out["max_tokens"] = params.max_tokens
    if params.seed is not None:
        out["seed"] = params.seed
    if params.stop:
        out["stop"] = list(params.stop)
    if params.logprobs is not None:
        out |= {"logprobs": True, "top_logprobs": params.logprobs}
    if params.logit_bias:
        out["logit_bias"] = {str(token): bias for token, bias in params.logit_bias}
    return out
