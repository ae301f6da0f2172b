"""The engine: a scheduler thread that owns the model and runs continuous batching.

    engine = Engine(lambda: load_model("default"))
    handle = engine.submit(prompt_ids, SamplingParams(temperature=0))
    for event in handle:            # streamed text deltas, then a final event with the result
        print(event.text, end="")

Requests wait in a bounded queue (EngineOverloaded when full). Between decode steps the thread
admits waiting requests (prefill into a free cache slot) and retires finished or cancelled ones
(waiting ones included), so sequences join and leave a running batch, each with its own sampling
settings. Callers never touch the model: they talk to the thread through the queue and their
handle's event stream, so generation never runs on an asyncio event loop.

Faults stay with their sequence: if one sequence's sampling step fails (its grammar dead-ends,
say), that sequence ends with finish_reason "error" and the rest of the batch carries on. Only a
failed forward pass, which every row shares, fails the whole batch.

A prompt that starts like an earlier one (the chat's previous turn and its answer, a shared system
prompt or tool schemas) is prefilled only from where the prefix cache (prefix_cache.py, budget
`CHATLOOP_PREFIX_CACHE_MB`) stops knowing it; `stats()` counts prefilled and reused prompt tokens,
and each result says how many of its prompt tokens came from the cache (`cached_tokens`).

The thread also *loads* the model: all torch work then happens on one thread. (On few cores,
running the model on a second thread after the main thread has used torch's OpenMP pool costs
~50% of decode speed: two thread pools fight for the cores.)
"""

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from chatloop.engine.detok import IncrementalDetokenizer, StopMatcher, TokenPieces, skipped_ids
from chatloop.engine.kernels import choose_plan
from chatloop.engine.quant import KernelPlan
from chatloop.engine.runner import ModelRunner
from chatloop.engine.sampling import SamplingParams, SequenceSampler, logprob_entry, logprob_rows, sample_next
from chatloop.engine.vision import VisionEncoder
from chatloop.errors import ChatloopError, ContextTooLongError, EngineOverloaded, UsageError
from chatloop.models.loading import LoadedModel
from chatloop.models.tool_calls import tool_format
from chatloop.models.vision import Pixels

log = logging.getLogger(__name__)

PREFILL_TOKENS = 2048  # prompt tokens prefilled together in one forward pass (bounds its mask)


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # stop | length | cancelled | error
    prompt_tokens: int
    completion_tokens: int
    model: str
    ttft_s: float | None
    latency_s: float
    error: str | None = None
    input_error: bool = False  # the error came from the request (e.g. its grammar), not the engine
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache instead of prefilled
    logprobs: list[dict] | None = None  # per output token, where asked for (OpenAI's logprobs.content)

    @property
    def decode_tok_s(self) -> float:
        """Decoding speed after the first token (the first one is dominated by prefill)."""
        span = self.latency_s - (self.ttft_s or 0.0)
        return (self.completion_tokens - 1) / span if self.completion_tokens > 1 and span > 0 else 0.0


@dataclass
class StreamEvent:
    text: str  # newly final text, possibly empty
    token_ids: list[int]  # tokens sampled in this step
    result: GenerationResult | None = None  # set on the last event only
    logprobs: list[dict] = field(default_factory=list)  # of token_ids, where the request asked for them

    @property
    def finished(self) -> bool:
        return self.result is not None


class RequestHandle:
    """The caller's side of one request: an iterator of StreamEvents and a cancel button."""

    def __init__(self, request_id: int, on_event: Callable[[StreamEvent], None] | None):
        self.id = request_id
        self._events: queue.Queue[StreamEvent] = queue.Queue()
        self._sink = on_event or self._events.put
        self._cancel = threading.Event()
        self.result: GenerationResult | None = None

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _emit(self, event: StreamEvent) -> None:
        if event.result is not None:
            self.result = event.result
        self._sink(event)

    def __iter__(self) -> Iterator[StreamEvent]:
        while True:
            event = self._events.get()
            yield event
            if event.finished:
                return

    def wait(self) -> GenerationResult:
        for _ in self:
            pass
        assert self.result is not None
        return self.result


@dataclass
class _Sequence:
    handle: RequestHandle
    prompt_ids: list[int]
    params: SamplingParams
    sampler: SequenceSampler
    detok: IncrementalDetokenizer
    stopper: StopMatcher
    submitted: float
    output_ids: list[int] = field(default_factory=list)
    first_token_at: float | None = None
    last_token: int = -1
    pixels: Pixels | None = None  # the prompt's images (a vision-language model), until prefilled
    cached_tokens: int = 0
    logprobs: list[dict] = field(default_factory=list)


def check_device(device: str) -> str:
    """`device` if this machine has it, else a UsageError saying what it has."""
    import torch

    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA GPU is visible to torch here ({torch.__version__})")
        return device
    raise UsageError(f"unknown device '{device}': choose cpu or cuda")


class Engine:
    def __init__(self, loader: Callable[[], LoadedModel], max_batch: int = 8, max_waiting: int = 64,
                 max_len: int | None = None, prefix_cache_mb: int | None = None, device: str | None = None):
        """Start the engine thread, which calls `loader()`; returns once the model is ready
        (re-raising the loader's error, e.g. ModelRefError for a bad reference). prefix_cache_mb:
        the prefix cache's budget (0 disables it; None: the CHATLOOP_PREFIX_CACHE_MB setting).
        device: cpu or cuda (None: the CHATLOOP_DEVICE setting)."""
        from chatloop.config import get_settings

        settings = get_settings()
        self.prefix_cache_mb = settings.prefix_cache_mb if prefix_cache_mb is None else prefix_cache_mb
        self.device = check_device(device or settings.device)
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self._waiting: deque[_Sequence] = deque()
        self._active: list[_Sequence] = []  # index == cache slot
        self._cv = threading.Condition()
        self._ids = itertools.count(1)
        self._stopping = False
        self._calls: list[tuple[Callable[[], object], dict, threading.Event]] = []
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(loader, max_len), name="chatloop-engine", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._load_error is not None:
            raise self._load_error

    @classmethod
    def start(cls, ref, dtype: str = "auto", *, max_batch: int = 8, max_waiting: int = 64,
              prefix_cache_mb: int | None = None, device: str | None = None) -> "Engine":
        """The one way to start an engine from a model reference (a REF string or a ResolvedRef), for
        the CLI, the server's engine pool and the benchmarks."""
        from chatloop.models.loading import load_model

        return cls(lambda: load_model(ref, dtype), max_batch=max_batch, max_waiting=max_waiting,
                   prefix_cache_mb=prefix_cache_mb, device=device)

    def _setup(self, loader: Callable[[], LoadedModel], max_len: int | None) -> None:
        loaded = loader()
        self.loaded = loaded
        self.model_id = loaded.model_id
        self.tokenizer = loaded.tokenizer
        self.skipped_ids = skipped_ids(loaded.tokenizer, tool_format(loaded.tokenizer).markers)
        self.pieces = TokenPieces(loaded.tokenizer)
        self.max_len = min(max_len or loaded.context_len, loaded.context_len)
        t = time.perf_counter()
        if self.device != "cpu":
            # A GPU has one fast format for every case (bf16 through cuBLAS); the measured choice and
            # the int8/int4 packings are CPU kernels.
            if loaded.dtype not in ("auto", "float32", "bfloat16"):
                raise UsageError(f"--dtype {loaded.dtype} runs on the CPU only; on {self.device} use auto "
                                 "(bfloat16), bfloat16 or float32")
            plan = KernelPlan.uniform("float32" if loaded.dtype == "float32" else "bfloat16")
            self.kernel_choice = {"device": self.device, "forced": loaded.dtype}
        elif loaded.dtype == "auto":
            plan, self.kernel_choice = choose_plan(loaded.model, loaded.tokenizer, loaded.model_id)
            loaded.timings["kernel_choice_s"] = time.perf_counter() - t
        else:
            plan, self.kernel_choice = KernelPlan.uniform(loaded.dtype), {"forced": loaded.dtype}
        log.info("%s on %s, kernels: %s", loaded.model_id, self.device, plan.describe())
        self.plan = plan
        t = time.perf_counter()
        try:
            self.runner = ModelRunner(loaded.model, plan, max_slots=self.max_batch, max_len=self.max_len,
                                      prefix_cache_bytes=self.prefix_cache_mb << 20, device=self.device)
        except ValueError as e:  # a forced format this CPU or these shapes cannot run
            if "forced" not in self.kernel_choice:
                raise
            raise UsageError(f"--dtype {loaded.dtype}: {e}") from e
        loaded.timings["pack_s"] = time.perf_counter() - t
        log.info("%s: key/value cache %s", loaded.model_id, self.runner.kv_cache)
        self.vocab_size = loaded.model.config.get_text_config().vocab_size
        # A vision-language model takes images as pixels (serving/images.py asks `accepts_images`).
        self.processor = loaded.processor
        self.vision = VisionEncoder(loaded.model, self.runner.dtype) if loaded.processor is not None else None
        self.accepts_images = self.vision is not None
        self.eos_ids = frozenset(loaded.eos_token_ids)
        self._grammars = None
        self._grammar_lock = threading.Lock()

    @property
    def grammars(self):
        """The grammar compiler for this model's tokenizer (built on first use)."""
        with self._grammar_lock:
            if self._grammars is None:
                from chatloop.engine.constrain import Grammars

                self._grammars = Grammars(self.tokenizer, self.vocab_size, tuple(sorted(self.eos_ids)))
            return self._grammars

    def run_on_engine_thread(self, fn: Callable[[], object]) -> object:
        """Run `fn` on the engine thread between steps (e.g. a benchmark baseline using torch)."""
        box: dict[str, object] = {}
        done = threading.Event()
        with self._cv:
            self._calls.append((fn, box, done))
            self._cv.notify()
        done.wait()
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["value"]

    # --- caller side (any thread) ------------------------------------------------------------

    def submit(self, prompt_ids: list[int], params: SamplingParams,
               on_event: Callable[[StreamEvent], None] | None = None, pixels: Pixels | None = None) -> RequestHandle:
        """Queue a prompt; `pixels` are its images (for a model that `accepts_images`)."""
        if pixels is not None and not self.accepts_images:
            raise UsageError(f"{self.model_id} is a text-only model: it does not take images")
        if not prompt_ids:
            raise ContextTooLongError("the prompt is empty")
        if len(prompt_ids) >= self.max_len:
            raise ContextTooLongError(
                f"the prompt has {len(prompt_ids)} tokens; this model's context holds {self.max_len}"
            )
        handle = RequestHandle(next(self._ids), on_event)
        seq = _Sequence(
            handle=handle,
            prompt_ids=list(prompt_ids),
            params=params,
            sampler=SequenceSampler(params, self.vocab_size, prompt_ids),
            detok=IncrementalDetokenizer(self.tokenizer, self.skipped_ids),
            stopper=StopMatcher(params.stop),
            submitted=time.perf_counter(),
            pixels=pixels,
        )
        with self._cv:
            if self._stopping:
                raise ChatloopError("the engine is shut down")
            if len(self._waiting) >= self.max_waiting:
                raise EngineOverloaded(
                    f"engine overloaded: {len(self._waiting)} requests already waiting; retry shortly"
                )
            self._waiting.append(seq)
            self._cv.notify()
        return handle

    def generate(self, prompt_ids: list[int], params: SamplingParams) -> GenerationResult:
        return self.submit(prompt_ids, params).wait()

    def stats(self) -> dict[str, int]:
        """Sequences running and waiting; prompt tokens prefilled and taken from the prefix cache
        (since start), and what the prefix cache holds."""
        runner, prefix = self.runner, self.runner.prefix
        with self._cv:
            return {"active": len(self._active), "waiting": len(self._waiting), "max_batch": self.max_batch,
                    "prefill_tokens": runner.prefilled_tokens, "prefix_cached_tokens": runner.reused_tokens,
                    "prefix_cache_blocks": len(prefix) if prefix else 0,
                    "prefix_cache_bytes": prefix.bytes if prefix else 0,
                    "prefix_cache_evictions": prefix.evictions if prefix else 0}

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(timeout)

    # --- scheduler thread ----------------------------------------------------------------------

    def _run(self, loader: Callable[[], LoadedModel], max_len: int | None) -> None:
        try:
            self._setup(loader, max_len)
        except BaseException as e:  # handed to the constructor, which re-raises it
            self._load_error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._waiting and not self._active and not self._calls:
                    self._cv.wait()
                if self._stopping:
                    break
                calls, self._calls = self._calls, []
            for fn, box, done in calls:
                try:
                    box["value"] = fn()
                except Exception as e:  # noqa: BLE001 - returned to the caller
                    box["error"] = e
                done.set()
            try:
                self._retire_cancelled()
                self._admit()
                if self._active:
                    self._step()
            except Exception as e:  # noqa: BLE001 - a failed step must fail its requests, not the thread
                log.exception("engine step failed")
                self._fail_all(f"{type(e).__name__}: {e}")
        self._fail_all("the engine shut down", reason="cancelled")

    def _admit(self) -> None:
        """Prefill waiting requests into free slots, together (up to PREFILL_TOKENS tokens)."""
        batch: list[_Sequence] = []
        tokens = 0
        with self._cv:
            while self._waiting and len(self._active) + len(batch) < self.max_batch:
                seq = self._waiting[0]
                if batch and tokens + len(seq.prompt_ids) > PREFILL_TOKENS:
                    break
                self._waiting.popleft()
                if seq.handle.cancelled:
                    self._finish(seq, "cancelled")
                    continue
                batch.append(seq)
                tokens += len(seq.prompt_ids)
        embeds = [self._image_embeds(seq) for seq in batch]
        batch = [seq for seq, e in zip(batch, embeds) if e is not False]
        embeds = [e for e in embeds if e is not False]
        if not batch:
            return
        first = len(self._active)
        self._active.extend(batch)  # first: a prefill that raises fails them with the rest (_loop)
        logits = self.runner.prefill([seq.prompt_ids for seq in batch], embeds)
        for seq, reused in zip(batch, self.runner.last_reused):
            seq.cached_tokens = reused
        self._advance(logits, first)

    def _image_embeds(self, seq: _Sequence):
        """The image features spliced into `seq`'s prompt (None: no images), or False when
        encoding them failed: then the sequence has ended with the error, alone."""
        pixels, seq.pixels = seq.pixels, None  # held only until prefill
        if pixels is None:
            return None
        try:
            return self.vision.embed(seq.prompt_ids, pixels)
        except Exception as e:  # noqa: BLE001 - this request's images: end it, keep the batch
            log.warning("request %d: images failed: %s: %s", seq.handle.id, type(e).__name__, e)
            self._finish(seq, "error", error=str(e), input_error=isinstance(e, UsageError))
            return False

    def _retire_cancelled(self) -> None:
        """End cancelled sequences, running or still waiting (a waiting one holds a queue place)."""
        with self._cv:
            cancelled = [seq for seq in self._waiting if seq.handle.cancelled]
            if cancelled:
                self._waiting = deque(seq for seq in self._waiting if not seq.handle.cancelled)
        for seq in cancelled:
            self._finish(seq, "cancelled")
        for slot in reversed(range(len(self._active))):
            seq = self._active[slot]
            if seq.handle.cancelled:
                self._remove(slot)
                self._finish(seq, "cancelled")

    def _step(self) -> None:
        logits = self.runner.decode([seq.last_token for seq in self._active])
        self._advance(logits, 0)

    def _advance(self, logits, first: int) -> None:
        """Sample and record the next token of the sequences in slots first.. (one logits row each);
        a sequence whose sampling or bookkeeping fails ends alone with an error."""
        rows = self._active[first:]
        logprobs = logprob_rows(logits, [seq.sampler for seq in rows])  # before sampling edits the logits
        tokens = sample_next(logits, [seq.sampler for seq in rows])
        done = []
        for j, (seq, token) in enumerate(zip(rows, tokens)):
            try:
                if isinstance(token, Exception):
                    raise token
                if j in logprobs:
                    seq.logprobs.append(logprob_entry(logprobs[j], token, seq.params.logprobs, self.pieces))
                finished = self._accept(seq, token)
            except Exception as e:  # noqa: BLE001 - this sequence's fault: end it, keep the batch
                log.warning("request %d failed: %s: %s", seq.handle.id, type(e).__name__, e)
                self._finish(seq, "error", error=str(e), input_error=isinstance(e, UsageError))
                finished = True
            if finished:
                done.append(first + j)
        for slot in reversed(done):
            self._remove(slot)

    def _remove(self, slot: int) -> None:
        """Free a cache slot (its history goes to the prefix cache), mirroring the runner's move of
        the last slot into the hole."""
        seq = self._active[slot]
        moved = self.runner.remove(slot, history=seq.prompt_ids + seq.output_ids)
        last = self._active.pop()
        if moved is not None:
            self._active[slot] = last

    def _accept(self, seq: _Sequence, token: int) -> bool:
        """Record a sampled token; returns True when the sequence has finished."""
        now = time.perf_counter()
        if seq.first_token_at is None:
            seq.first_token_at = now
        if token in self.eos_ids and not seq.params.ignore_eos:
            seq.logprobs[len(seq.output_ids):] = []  # the end of the answer is not one of its tokens
            self._finish(seq, "stop", tail=seq.stopper.feed(seq.detok.flush())[0] + seq.stopper.finish())
            return True
        seq.output_ids.append(token)
        seq.last_token = token
        seq.sampler.observe(token)
        text, hit_stop = seq.stopper.feed(seq.detok.push(token))
        if seq.sampler.constraint is not None and seq.sampler.constraint.finished:
            more, _ = seq.stopper.feed(seq.detok.flush())
            self._finish(seq, "stop", tail=text + more + seq.stopper.finish(), tokens=[token])
            return True
        if hit_stop:
            self._finish(seq, "stop", tail=text, tokens=[token])
            return True
        limit = seq.params.max_tokens
        if (
            (limit is not None and len(seq.output_ids) >= limit)
            or len(seq.prompt_ids) + len(seq.output_ids) >= self.max_len
            or (seq.params.max_time_s is not None and now - seq.submitted >= seq.params.max_time_s)
        ):
            more, hit_stop = seq.stopper.feed(seq.detok.flush())
            self._finish(seq, "stop" if hit_stop else "length", tail=text + more + seq.stopper.finish(), tokens=[token])
            return True
        seq.handle._emit(StreamEvent(text=text, token_ids=[token], logprobs=seq.logprobs[-1:]))
        return False

    def _finish(
        self, seq: _Sequence, reason: str, tail: str = "", error: str | None = None, tokens: list[int] | None = None,
        input_error: bool = False,
    ) -> None:
        if reason == "cancelled":
            tail = seq.stopper.feed(seq.detok.flush())[0] + seq.stopper.finish()
        result = GenerationResult(
            text=seq.stopper.text,
            token_ids=list(seq.output_ids),
            finish_reason=reason,
            prompt_tokens=len(seq.prompt_ids),
            completion_tokens=len(seq.output_ids),
            model=self.model_id,
            ttft_s=None if seq.first_token_at is None else seq.first_token_at - seq.submitted,
            latency_s=time.perf_counter() - seq.submitted,
            error=error,
            input_error=input_error,
            cached_tokens=seq.cached_tokens, logprobs=None if seq.params.logprobs is None else seq.logprobs,
        )
        seq.handle._emit(StreamEvent(text=tail, token_ids=tokens or [], result=result,
                                     logprobs=seq.logprobs[-1:] if tokens else []))

    def _fail_all(self, message: str, reason: str = "error") -> None:
        with self._cv:
            waiting, self._waiting = list(self._waiting), deque()
        for seq in self._active + waiting:
            self._finish(seq, reason, error=message)
        self._active.clear()
        self.runner.clear()
