"""The engine pool: one engine per exact model version, loaded on first use, unloaded when unused.

    lease = await pool.acquire(resolved_ref)     # loads the version if it is not in memory yet
    lease.engine.submit(...)
    lease.release()                               # when its sequences are done

Engines are keyed by exact version (`name:version`), never by the reference that named them: two
references to one version share an engine, and a new version (a promotion, a retrained run) gets
its own beside the old one, which finishes the requests it holds and is unloaded once idle. Pinned
versions (what the server's configured models serve now) stay loaded; a version that stops being
served is retired: unloaded as soon as its last request ends. Served versions always load; of
the others (exact versions a client asked for) at most `max_extra` are in memory: loading another
first unloads the least recently used idle one, and answers EngineOverloaded (503) when every
one of them is busy.

An engine is either our own (engine/scheduler.py) or, for a `RemoteModel` (`serve --backend
openai:URL`), a remote engine (engine/remote.py) with the same interface: the pool loads, pins and
unloads both alike, and sums their counters (prefilled and prefix-cached prompt tokens) in `stats`.

All methods but `stats` run on the event loop; loading and unloading happen in worker threads.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field

from chatloop.engine.remote import RemoteEngine
from chatloop.engine.scheduler import Engine
from chatloop.errors import EngineOverloaded
from chatloop.models.refs import ResolvedRef

log = logging.getLogger(__name__)

SUMMED = ("active", "waiting", "prefill_tokens", "prefix_cached_tokens", "prefix_cache_bytes")  # pool totals


@dataclass
class _Slot:
    model_id: str
    pinned: bool
    ready: asyncio.Future  # the Engine, once loaded
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)
    retired: bool = False  # no longer served: unload as soon as its last user is done

    @property
    def engine(self) -> Engine | None:
        return self.ready.result() if self.ready.done() and not self.ready.exception() else None


class Lease:
    """One user's hold on an engine; `release` is idempotent."""

    def __init__(self, pool: "EnginePool", engine: Engine):
        self.pool, self.engine = pool, engine
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.pool._release(self.engine.model_id)


class EnginePool:
    def __init__(self, *, dtype: str, max_batch: int, max_waiting: int, max_extra: int, idle_seconds: float,
                 prefix_cache_mb: int | None = None, device: str = "cpu"):
        self.dtype, self.max_batch, self.max_waiting, self.device = dtype, max_batch, max_waiting, device
        self.prefix_cache_mb = prefix_cache_mb
        self.max_extra, self.idle_seconds = max_extra, idle_seconds
        self._slots: dict[str, _Slot] = {}

    async def acquire(self, ref: ResolvedRef, *, pin: bool = False) -> Lease:
        slot = self._slots.get(ref.model_id)
        # Served versions (pinned) always load; the limit is on the others a client asked for.
        while slot is None and not pin and self._extra() >= self.max_extra:
            await self._unload_one_idle()
            slot = self._slots.get(ref.model_id)  # another request may have loaded it meanwhile
        if slot is None:
            slot = _Slot(ref.model_id, pin, asyncio.get_running_loop().create_future())
            self._slots[ref.model_id] = slot
            slot.users += 1
            try:
                kind = RemoteEngine if ref.kind == "remote" else Engine  # a remote engine: engine/remote.py
                where = {} if kind is RemoteEngine else {"device": self.device}
                engine = await asyncio.to_thread(kind.start, ref, self.dtype, max_batch=self.max_batch,
                                                 max_waiting=self.max_waiting, prefix_cache_mb=self.prefix_cache_mb,
                                                 **where)
            except BaseException as e:
                del self._slots[ref.model_id]
                slot.ready.set_exception(e)
                slot.ready.exception()  # retrieved: waiters re-raise it, nobody else needs to
                raise
            slot.ready.set_result(engine)
            log.info("loaded %s (%s)", engine.model_id, engine.loaded.dtype)
            return Lease(self, engine)
        slot.users += 1
        slot.pinned = slot.pinned or pin
        slot.retired = slot.retired and not pin
        try:
            engine = await asyncio.shield(slot.ready)
        except BaseException:
            slot.users -= 1
            raise
        return Lease(self, engine)

    def _extra(self) -> int:
        return sum(1 for s in self._slots.values() if not s.pinned)

    def _release(self, model_id: str) -> None:
        slot = self._slots.get(model_id)
        if slot is not None:
            slot.users -= 1
            slot.last_used = time.monotonic()
            if slot.retired and slot.users == 0 and slot.engine is not None:
                asyncio.get_running_loop().create_task(self._unload(slot))

    async def pin(self, ref: ResolvedRef) -> None:
        """Load `ref` (if needed) and keep it loaded until `retire`."""
        (await self.acquire(ref, pin=True)).release()

    def pinned(self) -> set[str]:
        return {s.model_id for s in self._slots.values() if s.pinned}

    async def retire(self, model_id: str) -> None:
        """Stop keeping `model_id` loaded: it is unloaded now if idle, else when its last request ends
        (requests in flight finish on it: a release never breaks a stream)."""
        slot = self._slots.get(model_id)
        if slot is None:
            return
        slot.pinned, slot.retired = False, True
        if slot.users == 0 and slot.engine is not None:
            await self._unload(slot)

    async def _unload_one_idle(self) -> None:
        idle = [s for s in self._slots.values() if not s.pinned and s.users == 0 and s.engine is not None]
        if not idle:
            raise EngineOverloaded(f"the {self._extra()} model versions loaded besides the served ones are all in "
                                   "use; retry shortly (or raise CHATLOOP_MAX_LOADED_MODELS)")
        await self._unload(min(idle, key=lambda s: s.last_used))

    async def _unload(self, slot: _Slot) -> None:
        if self._slots.get(slot.model_id) is not slot:
            return  # already unloaded (or replaced by a newer load of the same version)
        del self._slots[slot.model_id]
        log.info("unloading %s (idle)", slot.model_id)
        await asyncio.to_thread(slot.engine.shutdown)

    async def sweep(self) -> None:
        """Unload versions nobody has used for `idle_seconds` (pinned ones stay)."""
        now = time.monotonic()
        for slot in list(self._slots.values()):
            if (not slot.pinned and slot.users == 0 and slot.engine is not None
                    and now - slot.last_used >= self.idle_seconds):
                await self._unload(slot)

    async def run_sweeper(self) -> None:
        """Sweep periodically until cancelled (a task the server runs for its lifetime)."""
        while True:
            await asyncio.sleep(max(1.0, min(30.0, self.idle_seconds / 4)))
            await self.sweep()

    def engines(self) -> list[Engine]:
        return [s.engine for s in list(self._slots.values()) if s.engine is not None]

    def get(self, model_id: str) -> Engine | None:
        slot = self._slots.get(model_id)
        return slot.engine if slot else None

    def stats(self) -> dict:
        """Totals over the loaded engines plus one entry per version (safe from any thread)."""
        per = {e.model_id: e.stats() for e in self.engines()}
        totals = {k: sum(s.get(k, 0) for s in per.values()) for k in SUMMED}
        return {**totals, "loaded": sorted(per), "engines": per}

    async def close(self) -> None:
        for slot in list(self._slots.values()):
            if slot.engine is not None:
                await asyncio.to_thread(slot.engine.shutdown)
        self._slots.clear()
