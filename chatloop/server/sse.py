"""`EventStreamResponse`: an ASGI response that sends a chat service stream as server-sent events.

The generator it sends is the service's one loop (serving/run.py), which watches for the client
leaving and cancels the run itself; this response only writes. If the socket fails first, it
keeps consuming the generator without writing, so the loop still reaches its end (and records
the stopped answer) instead of being abandoned mid-way.
"""

from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class EventStreamResponse(StreamingResponse):
    """Starlette's StreamingResponse headers, with a sending loop of our own (see the module doc)."""

    def __init__(self, events: AsyncIterator[str], status_code: int = 200):
        super().__init__(events, status_code=status_code, headers={"Cache-Control": "no-cache"},
                         media_type="text/event-stream")
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connected = True

        async def write(message: dict) -> None:
            nonlocal connected
            if connected:
                try:
                    await send(message)
                except OSError:  # the client went away; the loop notices through `receive`
                    connected = False

        try:
            await write({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.events:
                await write({"type": "http.response.body", "body": chunk.encode("utf-8"), "more_body": True})
            await write({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self.events.aclose()
