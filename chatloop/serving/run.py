"""A run (one plan's sequences on one engine) and the one streaming loop every entry point uses.

    run = Run([Part(lease, plan)])                  # submits; EngineOverloaded before anything starts
    async for chunk in drive(run, sink, receive, metrics):
        ...                                         # SSE text for a stream; ignored when collecting

`drive` is written once for /v1 and /api, streaming or not. It merges the choices' events from
the engine thread, hands them to the entry point's `Sink` (which encodes them: OpenAI chunks, app
events) and keeps the metrics. It also listens for the client going away (`http.disconnect` on
the ASGI `receive`): then it cancels the run, so the engine frees the slots (or queue places) at
its next step, whether the client was reading a stream, waiting for a JSON answer, or had not
received a byte yet. The sink's `end` always runs, with the engine's final result of every
choice (partial text and `cancelled` for a client that left).
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from chatloop.engine.scheduler import GenerationResult, StreamEvent
from chatloop.serving.plan import RequestPlan
from chatloop.serving.pool import Lease

log = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"
Receive = Callable[[], Awaitable[dict]]


def sse(payload) -> str:
    """One server-sent event carrying JSON (a pydantic model or plain data)."""
    if hasattr(payload, "model_dump_json"):
        return f"data: {payload.model_dump_json()}\n\n"
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class Sink(Protocol):
    """How an entry point turns a run's events into its own output (and records the outcome)."""

    def start(self) -> Iterable[str]: ...

    def delta(self, index: int, text: str, logprobs: list[dict] = ()) -> Iterable[str]:
        """New text of a choice, with its tokens' logprobs where the request asked for them."""

    def finish(self, index: int, result: GenerationResult) -> Iterable[str]: ...

    async def end(self, results: list[GenerationResult | None], disconnected: bool) -> Iterable[str]:
        """After the last choice finished (None: it never reported, the server is going down)."""


@dataclass(frozen=True)
class Part:
    """One plan on one leased engine (a side-by-side turn has two: stable and canary)."""

    lease: Lease
    plan: RequestPlan
    channel: str | None = None  # the release channel the version was picked from


class Run:
    """The sequences of one or more plans, each on its leased engine; events arrive on the event
    loop tagged with the choice's index (the parts' choices, in order)."""

    def __init__(self, parts: list[Part]):
        self.parts = parts
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, StreamEvent]] = asyncio.Queue()
        self.handles = []
        self.part_of: list[Part] = []  # choice index -> its part
        try:
            for part in parts:
                engine, plan = part.lease.engine, part.plan
                for params in plan.params:
                    on_event = partial(self._deliver, len(self.handles))
                    if plan.body is not None:  # a remote engine: the request as OpenAI fields
                        self.handles.append(engine.submit_chat(plan.body, params, on_event=on_event))
                    else:
                        self.handles.append(engine.submit(plan.prompt_ids, params, on_event=on_event,
                                                          pixels=plan.pixels))
                    self.part_of.append(part)
        except BaseException:
            self.cancel()
            self.release()
            raise

    @property
    def plan(self) -> RequestPlan:
        return self.parts[0].plan

    @property
    def channel(self) -> str | None:
        return self.parts[0].channel

    @property
    def model_id(self) -> str:
        return self.parts[0].lease.engine.model_id

    async def opened(self) -> None:
        """Until every remote sequence is accepted by its engine (a local one is at once); its
        refusal (overloaded, bad request, unreachable) is raised, with the run cancelled and released."""
        pending = [asyncio.wrap_future(h.opened) for h in self.handles if hasattr(h, "opened")]
        for future in pending:  # every outcome is retrieved, so none is reported as never retrieved
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            for future in asyncio.as_completed(pending):
                await future
        except BaseException:
            self.cancel()
            self.release()
            raise

    def _deliver(self, index: int, event: StreamEvent) -> None:  # called on the engine thread
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))
        except RuntimeError:  # the event loop is closed (server shutting down): nobody is listening
            self.cancel()

    def cancel(self) -> None:
        for handle in self.handles:
            if handle.result is None:
                handle.cancel()

    def release(self) -> None:
        for part in self.parts:
            part.lease.release()


async def _watch_disconnect(receive: Receive, run: Run) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            run.cancel()
            return


async def drive(run: Run, sink: Sink, receive: Receive | None, metrics) -> AsyncIterator[str]:
    """The one loop: events -> sink output, metrics, cancellation when the client leaves."""
    watcher = asyncio.create_task(_watch_disconnect(receive, run)) if receive else None
    results: list[GenerationResult | None] = [None] * len(run.handles)
    metrics.active_streams.inc()
    ended = False
    try:
        for chunk in sink.start():
            yield chunk
        while any(r is None for r in results):
            index, event = await run.queue.get()
            if event.text or event.logprobs:
                for chunk in sink.delta(index, event.text, event.logprobs):
                    yield chunk
            if event.finished:
                results[index] = event.result
                metrics.observe_generation(event.result)
                for chunk in sink.finish(index, event.result):
                    yield chunk
        ended = True
        disconnected = watcher is not None and watcher.done()
        for chunk in await sink.end(results, disconnected):
            yield chunk
    finally:
        if watcher is not None:
            watcher.cancel()
        run.cancel()
        run.release()
        metrics.active_streams.dec()
        if not ended:  # torn down mid-run (shutdown, or the consumer stopped): record what there is
            await asyncio.shield(sink.end(results, True))


async def collect(run: Run, sink: Sink, receive: Receive | None, metrics) -> list[GenerationResult]:
    """Drive a run to its end without streaming (a JSON answer); the sink's output is discarded."""
    async for _ in drive(run, sink, receive, metrics):
        pass
    return [h.result for h in run.handles]
