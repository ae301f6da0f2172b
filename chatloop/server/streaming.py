"""Bridges the engine thread to asyncio: submit a request, await its events on the event loop.

The engine calls the sink from its own thread; `call_soon_threadsafe` hands each event to the
loop. Leaving the iterator early (the client disconnected) cancels the request, which frees its
batch slot at the engine's next step.
"""

import asyncio
import logging
from collections.abc import AsyncIterator

from chatloop.engine.sampling import SamplingParams
from chatloop.engine.scheduler import Engine, RequestHandle, StreamEvent

log = logging.getLogger(__name__)


class EventStream:
    def __init__(self, engine: Engine, prompt_ids: list[int], params: SamplingParams):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
        # submit() raises EngineOverloaded / ContextTooLongError here, before any response starts.
        self.handle: RequestHandle = engine.submit(prompt_ids, params, on_event=self._deliver)

    def _deliver(self, event: StreamEvent) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the event loop is closed (server shutting down): nobody is listening
            self.handle.cancel()

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        try:
            while True:
                event = await self.queue.get()
                yield event
                if event.finished:
                    return
        finally:
            if self.handle.result is None:
                self.handle.cancel()

    async def collect(self) -> StreamEvent:
        async for event in self:
            if event.finished:
                return event
        raise RuntimeError("stream ended without a result")
