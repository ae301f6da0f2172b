"""The chat service: the serving work between a router and an engine, written once.

    service = ChatService(pool, db, models=["default", "runs:my-sft"], limits=..., metrics=...)
    await service.open()                                   # resolves and loads the configured models
    run = await service.start("my-sft", ChatRequest(...))  # resolve -> lease -> plan -> submit
    async for chunk in service.drive(run, sink, receive): ...

`/v1`, `/api` (and, next, tools and retrieval) all go through `start` and `drive`: a request's
model reference is resolved to an exact version, the engine pool lends that version's engine, the
request plan is built once (in a worker thread: rendering and tokenizing never block the event
loop), and the run is submitted.

What the server serves: each configured model (`serve --model`, the first is `default`) is either
a registered **name**, which follows its release channels (stable; a canary for its share of new
conversations), or a **fixed** version (a directory, a .gguf file, runs:RUN, NAME:VERSION).
Clients may also name registered names (and NAME@canary), exact registered versions and runs:RUN
— never a filesystem path. `watch_releases` polls the database for release actions (promote,
canary, rollback, also by another server or the CLI) and switches within seconds: the new version
is loaded and pinned, the old one finishes what it is answering and is unloaded.

With a remote backend (`serve --backend openai:URL`, engine/remote.py) the configured models are
the remote's (`default`: the first one it lists), each a fixed version named `MODEL@HOST`; the
pool lends a remote engine for them, and `start` waits until the remote has accepted the request,
so its refusals (overload, bad request) are the client's status, not an error inside a stream.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from chatloop.engine.remote import RemoteBackend
from chatloop.errors import ModelRefError
from chatloop.models.refs import DEFAULT_NAME, DEFAULT_REF, ResolvedRef, channel_ref, resolve
from chatloop.registry.catalog import describe
from chatloop.registry.releases import ReleaseTable, release_table
from chatloop.registry.versions import get_version, resolved
from chatloop.serving.images import ImageReader, sees_pixels
from chatloop.serving.plan import ChatRequest, Limits, build_plan
from chatloop.serving.pool import EnginePool
from chatloop.serving.run import Part, Receive, Run, Sink, collect, drive
from chatloop.store.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """One configured model: a registered name following its channels, or a fixed version."""

    ref: str  # as the operator wrote it
    name: str
    fixed: ResolvedRef | None = None  # (or a RemoteModel)
    channel: str | None = None  # NAME@canary: always that channel


@dataclass(frozen=True)
class Target:
    """What answers one request: the exact version, and the channel it was picked from (None for a
    fixed version)."""

    ref: ResolvedRef
    channel: str | None = None

    @property
    def model_id(self) -> str:
        return self.ref.model_id


class ChatService:
    def __init__(self, pool: EnginePool, db: Database, *, models: list[str], limits: Limits, metrics,
                 poll_seconds: float = 1.0, images: ImageReader | None = None,
                 backend: RemoteBackend | None = None):
        if not models:
            raise ValueError("a chat service needs at least one model")
        self.pool, self.db, self.limits, self.metrics = pool, db, limits, metrics
        self.configured, self.poll_seconds = models, poll_seconds
        self.backend = backend
        self.images = images or ImageReader()  # image parts: validated; OCR text for a text-only model
        self.served: list[Served] = []  # [0] is `default`
        self.table = ReleaseTable()
        self._versions: dict[tuple[str, str], ResolvedRef] = {}  # registered versions never change
        self._refreshing = asyncio.Lock()

    # --- startup and releases ----------------------------------------------------------------------

    def _load_table(self) -> ReleaseTable:
        with self.db.session() as s:
            return release_table(s)

    def _configure(self) -> list[Served]:
        """Resolve the operator's references (paths allowed: the operator chose them)."""
        if self.backend is not None:
            self.table = self._load_table()
            remote = [self.backend.model(ref) for ref in self.configured]
            return [Served(ref, m.name, m) for ref, m in zip(self.configured, remote)]
        if any(ref == DEFAULT_REF or ref == DEFAULT_NAME for ref in self.configured):
            from chatloop.registry.default import ensure_default

            ensure_default(self.db)
        self.table = self._load_table()
        served = []
        for ref in self.configured:
            named = (DEFAULT_NAME, None) if ref == DEFAULT_REF else channel_ref(ref)
            if named and named[0] in self.table.names:
                served.append(Served(ref, named[0], channel=named[1]))
            else:
                fixed = resolve(ref)
                served.append(Served(ref, fixed.name, fixed))
        return served

    async def open(self) -> None:
        """Resolve the configured models and load (and pin) what they serve now."""
        self.served = await asyncio.to_thread(self._configure)
        await self._sync_engines()

    def _wanted(self) -> dict[str, ResolvedRef]:
        """The versions the configured models serve now (kept loaded), by exact version."""
        wanted = {}
        for entry in self.served:
            if entry.fixed is not None:
                wanted[entry.fixed.model_id] = entry.fixed
            else:
                for version in self.table.served_versions(entry.name):
                    ref = self._version(entry.name, version)
                    wanted[ref.model_id] = ref
        return wanted

    async def _sync_engines(self) -> None:
        wanted = await asyncio.to_thread(self._wanted)
        for ref in wanted.values():
            await self.pool.pin(ref)
        for model_id in self.pool.pinned() - wanted.keys():
            await self.pool.retire(model_id)

    async def refresh(self) -> None:
        """Reload the release table if it changed, and load and retire engines to match."""
        async with self._refreshing:
            table = await asyncio.to_thread(self._load_table)
            if table.event_id != self.table.event_id:
                log.info("release change (event %d): %s", table.event_id,
                         {n: c.as_dict() for n, c in table.names.items()})
                self.table = table
                await self._sync_engines()

    async def watch_releases(self) -> None:
        """Poll the release log until cancelled (release actions by the CLI, the admin page or
        another server sharing the database take effect within `poll_seconds` plus a load)."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the watcher; retried next poll
                log.exception("reading the release table failed; retrying")

    # --- what a request gets -------------------------------------------------------------------------

    @property
    def default(self) -> Served:
        return self.served[0]

    def follows_channels(self, ref: str | None) -> bool:
        entry = self._entry(ref)
        if entry is not None:
            return entry.fixed is None
        named = channel_ref(ref or "")
        return bool(named and named[1] is None and named[0] in self.table.names)

    def canary_running(self, ref: str | None) -> bool:
        """Whether `ref` follows release channels and its name has a canary now."""
        if not self.follows_channels(ref):
            return False
        entry = self._entry(ref)
        name = entry.name if entry is not None else channel_ref(ref)[0]
        return self.table.names[name].canary is not None

    def assign_channel(self, ref: str | None) -> str:
        """The channel of a new conversation: canary for its share, else stable."""
        entry = self._entry(ref)
        name = entry.name if entry is not None else channel_ref(ref)[0]
        return self.table.pick(name)[1]

    def _entry(self, ref: str | None) -> Served | None:
        ref = (ref or DEFAULT_REF).strip()
        if ref == DEFAULT_REF:
            return self.served[0]
        return next((e for e in self.served if ref in (e.ref, e.name) or (e.fixed and ref == e.fixed.model_id)),
                    None)

    def _version(self, name: str, version: str) -> ResolvedRef:
        if (name, version) not in self._versions:
            with self.db.session() as s:
                self._versions[name, version] = resolved(get_version(s, name, version))
        return self._versions[name, version]

    def _pick(self, name: str, channel: str | None, key: str | None) -> Target:
        version, picked = self.table.pick(name, channel, key)
        return Target(self._version(name, version), picked)

    def resolve(self, ref: str | None, *, channel: str | None = None, key: str | None = None) -> Target:
        """The exact version a client's model reference names now (a conversation's channel or a
        sticky key decides between stable and canary); ModelRefError (404) otherwise."""
        entry = self._entry(ref)
        if entry is not None:
            if entry.fixed is not None:
                return Target(entry.fixed)
            return self._pick(entry.name, entry.channel or channel, key)
        ref = ref.strip()
        named = channel_ref(ref)
        if named and named[0] in self.table.names:
            return self._pick(named[0], named[1] or channel, key)
        try:
            return Target(resolve(ref, allow_paths=False))
        except ModelRefError as e:
            served = ", ".join(e.ref for e in self.served)
            raise ModelRefError(f"the model '{ref}' is not served here: {e} (this server serves {served}; "
                                "'default' is the first)", param="model", code="model_not_found") from e

    def menu(self, admin: bool = False) -> list[dict]:
        """The models a picker offers: the configured ones first, then every other registered name;
        each with the name to send, its languages and size where the catalog knows them and, for
        administrators, the channels' exact versions."""
        out = []
        names = [e.name for e in self.served]
        for i, entry in enumerate(self.served):
            if entry.fixed is not None:  # a name to send: its own if unique (never a path), else its version
                send = entry.name if names.count(entry.name) == 1 else entry.fixed.model_id
                item = {"id": entry.fixed.model_id, "name": "default" if i == 0 else send, "default": i == 0}
            else:
                item = {"id": entry.name, "name": "default" if i == 0 else entry.name, "default": i == 0}
                if admin:
                    item.update(self._channels_out(entry.name))
            out.append(item)
        # Every other registered name (a pulled or trained model) can be picked too; the pool
        # loads it on first use.
        for name in sorted(self.table.names):
            if name not in names and self.table.names[name].stable:
                out.append({"id": name, "name": name, "default": False,
                            **(self._channels_out(name) if admin else {})})
        for item in out:
            item.update(describe(item["id"].split(":")[0]) or {})
        return out

    def _channels_out(self, name: str) -> dict:
        ch = self.table.names[name]
        return {"stable": f"{name}:{ch.stable}", "canary": f"{name}:{ch.canary}" if ch.canary else None,
                "canary_percent": ch.percent if ch.canary else 0}

    def default_id(self) -> str:
        entry = self.served[0]
        if entry.fixed is not None:
            return entry.fixed.model_id
        return f"{entry.name}:{self.table.names[entry.name].stable}"

    def read_ahead(self, image) -> None:
        """Start reading an uploaded image's text now when the default model is text-only, so the
        message that sends it finds the text in the OCR cache instead of waiting for it."""
        engine = self.pool.get(self.default_id())
        if engine is not None and not sees_pixels(engine):
            self.images.ocr.submit(image)

    # --- running ---------------------------------------------------------------------------------------

    async def start(self, ref: str | None, request: ChatRequest, *, channel: str | None = None,
                    key: str | None = None) -> Run:
        """Resolve, lease, plan and submit; raises UsageError (bad request), ModelRefError (unknown
        model) or EngineOverloaded before anything is queued."""
        request = await self.images.validate(request)
        target = await asyncio.to_thread(self.resolve, ref, channel=channel, key=key)
        run = Run([await self._part(target, request)])
        await run.opened()
        return run

    async def _part(self, target: Target, request: ChatRequest) -> Part:
        lease = await self.pool.acquire(target.ref)
        try:
            request = await self.images.prepare(request, lease.engine)
            plan = await asyncio.to_thread(build_plan, lease.engine, request, self.limits)
        except BaseException:
            lease.release()
            raise
        return Part(lease, plan, target.channel)

    async def start_pair(self, ref: str | None, request: ChatRequest, channels: list[str]) -> Run:
        """One request answered by each of `channels` (a side-by-side vote: stable and canary)."""
        parts: list[Part] = []
        request = await self.images.validate(request)
        try:
            for channel in channels:
                target = await asyncio.to_thread(self.resolve, ref, channel=channel)
                parts.append(await self._part(target, request))
        except BaseException:
            for part in parts:
                part.lease.release()
            raise
        run = Run(parts)
        await run.opened()
        return run

    def drive(self, run: Run, sink: Sink, receive: Receive | None) -> AsyncIterator[str]:
        return drive(run, sink, receive, self.metrics)

    async def collect(self, run: Run, sink: Sink, receive: Receive | None):
        return await collect(run, sink, receive, self.metrics)

    def stats(self) -> dict:
        return self.pool.stats()

    def releases(self) -> dict:
        return {n: c.as_dict() for n, c in self.table.names.items()}
