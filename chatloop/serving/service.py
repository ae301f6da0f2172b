"""The chat service: the serving work between a router and an engine, written once.

    service = ChatService(pool, models=["default", "runs:my-sft"], limits=..., metrics=...)
    await service.open()                                   # loads and pins the configured models
    run = await service.start("my-sft", ChatRequest(...))  # resolve -> lease -> plan -> submit
    async for chunk in service.drive(run, sink, receive): ...

`/v1`, `/api` (and, next, tools and retrieval) all go through `start` and `drive`: a request's
model reference is resolved to an exact version, the engine pool lends that version's engine, the
request plan is built once (in a worker thread: rendering and tokenizing never block the event
loop), and the run is submitted. The references a client may send are the server's own: the
configured models (by `default`, their REF, name or exact version), `runs:RUN` and stored
`NAME:VERSION`s — never a filesystem path.
"""

import asyncio
from collections.abc import AsyncIterator

from chatloop.errors import ModelRefError
from chatloop.models.refs import ResolvedRef, resolve
from chatloop.serving.plan import ChatRequest, Limits, build_plan
from chatloop.serving.pool import EnginePool
from chatloop.serving.run import Receive, Run, Sink, collect, drive


class ChatService:
    def __init__(self, pool: EnginePool, *, models: list[str], limits: Limits, metrics):
        if not models:
            raise ValueError("a chat service needs at least one model")
        self.pool, self.limits, self.metrics = pool, limits, metrics
        self.configured = models
        self.served: list[ResolvedRef] = []  # the configured models, resolved at open(); [0] is the default
        self._aliases: dict[str, ResolvedRef] = {}

    async def open(self) -> None:
        """Resolve the configured models (paths allowed: the operator chose them) and load them."""
        for ref in self.configured:
            resolved = await asyncio.to_thread(resolve, ref)
            self.served.append(resolved)
            lease = await self.pool.acquire(resolved, pin=True)
            lease.release()
            for alias in (ref, resolved.model_id, resolved.name):
                self._aliases.setdefault(alias, resolved)
        self._aliases["default"] = self.served[0]

    @property
    def default(self) -> ResolvedRef:
        return self.served[0]

    def menu(self) -> list[dict]:
        """The configured models as a picker shows them: exact version, the name to send, default."""
        names = [r.name for r in self.served]
        return [{"id": r.model_id, "name": "default" if i == 0 else (r.name if names.count(r.name) == 1 else r.model_id),
                 "default": i == 0} for i, r in enumerate(self.served)]

    def resolve(self, ref: str | None) -> ResolvedRef:
        """The exact version a client's model reference names; ModelRefError (404) otherwise."""
        ref = (ref or "default").strip()
        if ref in self._aliases:
            return self._aliases[ref]
        try:
            return resolve(ref, allow_paths=False)
        except ModelRefError as e:
            served = ", ".join(r.model_id for r in self.served)
            raise ModelRefError(f"the model '{ref}' is not served here: {e} (this server serves {served}; "
                                "'default' is the first)", param="model", code="model_not_found") from e

    async def start(self, ref: str | None, request: ChatRequest) -> Run:
        """Resolve, lease, plan and submit; raises UsageError (bad request), ModelRefError (unknown
        model) or EngineOverloaded before anything is queued."""
        target = await asyncio.to_thread(self.resolve, ref)
        lease = await self.pool.acquire(target)
        try:
            plan = await asyncio.to_thread(build_plan, lease.engine, request, self.limits)
        except BaseException:
            lease.release()
            raise
        return Run(lease, plan)

    def drive(self, run: Run, sink: Sink, receive: Receive | None) -> AsyncIterator[str]:
        return drive(run, sink, receive, self.metrics)

    async def collect(self, run: Run, sink: Sink, receive: Receive | None):
        return await collect(run, sink, receive, self.metrics)

    def stats(self) -> dict:
        return self.pool.stats()
