"""Keep loaded models in memory under a byte budget, and let idle ones go (scale to zero).

- One load per key: concurrent callers for a model that is loading wait for that load
  (they are held, not failed); a failed load fails its waiters and is retried by the
  next caller.
- Loads run in an executor, never on the event loop (ONNX session creation takes
  ~0.1-1 s and would freeze every other request), at most `max_concurrent_loads` at once
  (default: half the usable cores, at least 1): each is CPU- and memory-heavy, and a burst
  of misses (many models, long-tailed traffic) loading all at once would only slow each
  other and the resident models' requests down.
  A hit never waits for a load (there is no cache-wide lock). Loads run in the cache's own
  threads, at a lower OS priority than the threads serving requests (cache_policy.py,
  `load_nice`), unless the caller gives an executor.
- Eviction keeps the total under `memory_budget_bytes`, loads included: before a model
  loads, idle models are evicted to make room for its expected size
  (its size when last loaded, else the largest model seen), so the budget holds while it loads
  rather than only once it has loaded. Which go first: the fewest requests over a recent window
  (cache_policy.RecentUses), least recently used among equals, so a one-off request for a
  long-tail model evicts the previous one-off, not a model in steady use. A model with requests in
  flight is never evicted (its memory would not come back anyway), nor is a pinned one.
  If nothing can go yet, the cache runs over budget and evicts as requests finish.
- With `idle_unload_s`, a model unused that long is unloaded, unless pinned
  (deployments with min_replicas >= 1).
- Pinned models count against the budget: `pin_within_budget()` loads a model and pins it
  only if every pinned model still fits (else `insufficient_memory`, 409), and a model
  that cannot fit next to the pinned ones is not loaded at all.
- Whatever callers keep per model (a micro-batcher holds its predictor) must go with it:
  `on_unload(callback)` calls `callback(key)` whenever a model leaves the cache (evicted,
  unloaded idle, over budget, closed), so the model's memory is really given back.

Use `async with cache.use(key) as predictor:` around a request so the cache knows the
model is busy; `get()` is the same without that protection: a model fetched with get()
can be evicted under memory pressure before the caller runs it (it then answers
Unavailable, "retry").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiaas.core.cpu import usable_cores
from aiaas.core.errors import InsufficientMemory, Unavailable
from aiaas.serving.cache_policy import DEFAULT_WINDOW, LOAD_NICE, RecentUses, load_executor

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Entry:
    predictor: Any
    size: int
    last_used: float
    in_flight: int = 0
    uses: int = 0


@dataclass
class _Counters:
    hits: int = 0
    misses: int = 0
    loads: int = 0
    load_failures: int = 0
    evictions: int = 0
    idle_unloads: int = 0
    load_seconds: list[float] = field(default_factory=list)


class _DoesNotFit(Unavailable):
    """The model is larger than the room pinned models leave in the budget."""


def _size_of(predictor: Any) -> int:
    size = getattr(predictor, "memory_bytes", None)
    if not isinstance(size, int) or size < 0:
        raise TypeError("the loader must return an object with an integer memory_bytes >= 0")
    return size


def _close(predictor: Any) -> None:
    close = getattr(predictor, "close", None)
    if callable(close):
        close()


class ModelCache:
    def __init__(
        self,
        loader: Callable[[str], Any],
        *,
        memory_budget_bytes: int,
        idle_unload_s: float | None,
        executor: concurrent.futures.Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_concurrent_loads: int | None = None,
        load_nice: int = LOAD_NICE,
        recent_window: int = DEFAULT_WINDOW,
    ) -> None:
        """`executor`: where loads run; None: the cache's own `max_concurrent_loads` threads, each
        `load_nice` below the process's priority (0: the same). `recent_window`: requests over which
        eviction counts each model's use (cache_policy.RecentUses)."""
        if not callable(loader):
            raise TypeError(f"loader must be callable, got {type(loader).__name__}")
        if not isinstance(memory_budget_bytes, int) or memory_budget_bytes <= 0:
            raise ValueError(f"memory_budget_bytes must be a positive integer, got {memory_budget_bytes!r}")
        if idle_unload_s is not None and (
            not isinstance(idle_unload_s, int | float)
            or not math.isfinite(idle_unload_s)
            or idle_unload_s <= 0
        ):
            raise ValueError(
                f"idle_unload_s must be a positive number of seconds or None, got {idle_unload_s!r}"
            )
        if max_concurrent_loads is None:  # loads never take more than half the cores from inference
            max_concurrent_loads = max(1, usable_cores() // 2)
        if not isinstance(max_concurrent_loads, int) or max_concurrent_loads < 1:
            raise ValueError(f"max_concurrent_loads must be an integer >= 1, got {max_concurrent_loads!r}")
        self._loader = loader
        self._budget = memory_budget_bytes
        self._load_slots = asyncio.Semaphore(max_concurrent_loads)
        self._max_loads = max_concurrent_loads
        self._sizes: dict[str, int] = {}  # each model's size when last loaded: what its next load will need
        self._reserved: dict[str, int] = {}  # room held for the loads running now
        self._idle_s = idle_unload_s
        if not isinstance(load_nice, int) or isinstance(load_nice, bool) or not 0 <= load_nice <= 19:
            raise ValueError(f"load_nice must be an integer in 0..19, got {load_nice!r}")
        self._executor = executor
        self._own_executor: concurrent.futures.ThreadPoolExecutor | None = None  # made at the first load
        self._load_nice = load_nice
        self._recent = RecentUses(recent_window)
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._loading: dict[str, asyncio.Future[_Entry]] = {}
        self._waiting: dict[str, int] = {}  # requests waiting for each loading model
        self._pinned: set[str] = set()
        # Bumped by evict(): a load that started before an evict must not install a stale model.
        self._generation: dict[str, int] = {}
        self._over_budget = False
        self._counters = _Counters()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self._unload_callbacks: list[Callable[[str], None]] = []

    # -- public API -------------------------------------------------------------------------
    async def get(self, key: str) -> Any:
        """The loaded model for `key`, loading it (once) if needed."""
        entry = await self._acquire(key)
        entry.in_flight -= 1
        self._enforce_budget(protect=key)  # never hand out a model and evict it in the same breath
        return entry.predictor

    @contextlib.asynccontextmanager
    async def use(self, key: str) -> AsyncIterator[Any]:
        """Hold the model for the duration of a request: it is not evicted meanwhile."""
        entry = await self._acquire(key)
        try:
            yield entry.predictor
        finally:
            entry.in_flight -= 1
            entry.last_used = self._clock()
            # A model counts what it has open: one that opened a lazy graph for this request grew.
            entry.size = max(entry.size, _size_of(entry.predictor))
            self._enforce_budget()

    def pin(self, key: str, pinned: bool) -> None:
        """Pinned models are never idle-unloaded or LRU-evicted (min_replicas >= 1)."""
        if pinned:
            self._pinned.add(key)
        else:
            self._pinned.discard(key)
            self._enforce_budget()

    def on_unload(self, callback: Callable[[str], None]) -> None:
        """Call `callback(key)` whenever `key`'s model leaves the cache, to drop what refers to it."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        self._unload_callbacks.append(callback)

    @property
    def pinned_bytes(self) -> int:
        """Memory held by loaded pinned models."""
        return sum(e.size for k, e in self._entries.items() if k in self._pinned)

    async def pin_within_budget(self, key: str) -> None:
        """Load `key` and pin it, if all pinned models then fit the budget; else InsufficientMemory (409).

        Pinned models are never evicted, so together they must leave the budget's room for them."""
        try:
            entry = await self._acquire(key)
        except _DoesNotFit as exc:
            raise InsufficientMemory(exc.message, param="min_replicas") from None
        try:
            if key in self._pinned:
                return
            others = self.pinned_bytes
            if others + entry.size > self._budget:
                mib = 1 << 20
                raise InsufficientMemory(
                    f"This model needs {entry.size / mib:.0f} MiB, and the {len(self._pinned)} pinned model(s) "
                    f"already use {others / mib:.0f} MiB of the {self._budget / mib:.0f} MiB model memory budget "
                    "(AIAAS_MODEL_MEMORY_BUDGET_MB): deploy with min_replicas=0, delete a pinned deployment, "
                    "or raise the budget.",
                    param="min_replicas",
                )
            self._pinned.add(key)
        finally:
            entry.in_flight -= 1
            self._enforce_budget()

    def evict(self, key: str) -> None:
        """Drop `key` now (new version deployed, deployment deleted). Requests already
        holding it finish with their reference; the next get() loads afresh."""
        self._generation[key] = self._generation.get(key, 0) + 1
        self._sizes.pop(key, None)  # a new version may differ in size
        self._recent.forget(key)
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._counters.evictions += 1
            if entry.in_flight == 0:
                _close(entry.predictor)
            self._unloaded(key)
            logger.info("evicted model %s", key)

    def unload_idle(self) -> list[str]:
        """Unload models idle for idle_unload_s (the sweeper calls this); returns their keys."""
        if self._idle_s is None:
            return []
        now = self._clock()
        idle = [
            key
            for key, e in self._entries.items()
            if e.in_flight == 0 and key not in self._pinned and now - e.last_used >= self._idle_s
        ]
        for key in idle:
            entry = self._entries.pop(key)
            _close(entry.predictor)
            self._unloaded(key)
            self._counters.idle_unloads += 1
            logger.info("unloaded idle model %s after %.0f s", key, now - entry.last_used)
        return idle

    def stats(self) -> dict[str, Any]:
        now = self._clock()
        c = self._counters
        return {
            "memory_bytes": self.memory_bytes,
            "memory_budget_bytes": self._budget,
            "models": {
                key: {
                    "bytes": e.size,
                    "in_flight": e.in_flight,
                    "pinned": key in self._pinned,
                    "idle_s": round(now - e.last_used, 3),
                    "uses": e.uses,
                }
                for key, e in self._entries.items()
            },
            "loading": sorted(self._loading),
            "reserved_bytes": sum(self._reserved.values()),
            "max_concurrent_loads": self._max_loads,
            "pinned": sorted(self._pinned),
            "hits": c.hits,
            "misses": c.misses,
            "loads": c.loads,
            "load_failures": c.load_failures,
            "evictions": c.evictions,
            "idle_unloads": c.idle_unloads,
            "last_load_s": round(c.load_seconds[-1], 4) if c.load_seconds else None,
        }

    @property
    def memory_bytes(self) -> int:
        return sum(e.size for e in self._entries.values())

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for future in list(self._loading.values()):  # a copy: each finished load leaves the dict
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(future)
        for key, entry in list(self._entries.items()):
            _close(entry.predictor)
            self._unloaded(key)
        self._entries.clear()
        if self._own_executor is not None:  # its loads are done (awaited above)
            self._own_executor.shutdown(wait=False)
            self._own_executor = None

    # -- internals --------------------------------------------------------------------------
    async def _acquire(self, key: str) -> _Entry:
        if self._closed:
            raise Unavailable("The model server is shutting down; retry the request.")
        self._ensure_sweeper()
        self._recent.add(key)
        entry = self._entries.get(key)
        if entry is not None:
            self._counters.hits += 1
        else:
            self._counters.misses += 1
            future = self._loading.get(key)
            if future is None:
                future = asyncio.ensure_future(self._load(key))
                self._loading[key] = future
                future.add_done_callback(partial(self._load_done, key))
            # Counted while they wait: a model just loaded for waiting requests is not evicted (for the
            # next load's room) before they wake up and hold it. shield: one impatient caller being
            # cancelled must not cancel everyone's load.
            self._waiting[key] = self._waiting.get(key, 0) + 1
            try:
                entry = await asyncio.shield(future)
            finally:
                self._waiting[key] -= 1
                if not self._waiting[key]:
                    del self._waiting[key]
            if self._entries.get(key) is not entry:  # evicted between load and wake-up
                return await self._acquire(key)
        entry.in_flight += 1
        entry.uses += 1
        entry.last_used = self._clock()
        self._entries.move_to_end(key)
        return entry

    def _load_done(self, key: str, future: asyncio.Future[_Entry]) -> None:
        if self._loading.get(key) is future:
            del self._loading[key]
        if not future.cancelled():
            future.exception()  # retrieved here so a failure nobody waited for is not reported as lost

    async def _load(self, key: str) -> _Entry:
        generation = self._generation.get(key, 0)
        async with self._load_slots:  # queued loads wait here; hits and running loads go on
            predictor, size, elapsed = await self._run_loader(key)
        self._sizes[key] = size
        self._counters.loads += 1
        self._counters.load_seconds = [*self._counters.load_seconds[-99:], elapsed]
        pinned = sum(e.size for k, e in self._entries.items() if k in self._pinned and k != key)
        if size + pinned > self._budget:
            _close(predictor)
            raise _DoesNotFit(
                f"Model '{key}' needs {size >> 20} MiB; the model cache budget is {self._budget >> 20} MiB "
                f"(AIAAS_MODEL_MEMORY_BUDGET_MB), of which pinned models hold {pinned >> 20} MiB; raise the "
                "budget, unpin a deployment (min_replicas=0) or deploy a smaller precision."
            )
        if self._closed:
            _close(predictor)
            raise Unavailable("The model server is shutting down; retry the request.")
        entry = _Entry(predictor=predictor, size=size, last_used=self._clock())
        if generation != self._generation.get(key, 0):
            # evict() ran while we loaded (e.g. a new version was deployed): discard; waiters retry.
            _close(predictor)
            return entry
        self._entries[key] = entry
        logger.info("loaded model %s in %.3f s (%d MiB)", key, elapsed, size >> 20)
        self._enforce_budget(protect=key)
        return entry

    async def _run_loader(self, key: str) -> tuple[Any, int, float]:
        """Make room for the model, then load it in the executor: (predictor, its bytes, seconds)."""
        if self._closed:  # closed while this load queued for a slot
            raise Unavailable("The model server is shutting down; retry the request.")
        self._reserved[key] = self._sizes.get(key, max(self._sizes.values(), default=0))
        try:
            self._enforce_budget()
            started = time.perf_counter()
            predictor = await asyncio.get_running_loop().run_in_executor(self._load_pool(), self._loader, key)
            size = _size_of(predictor)
        except Exception:
            self._counters.load_failures += 1
            logger.exception("loading model %s failed", key)
            raise
        finally:
            self._reserved.pop(key, None)  # the caller installs the entry before anything else runs
        return predictor, size, time.perf_counter() - started

    def _load_pool(self) -> concurrent.futures.Executor:
        if self._executor is not None:
            return self._executor
        if self._own_executor is None:
            self._own_executor = load_executor(self._max_loads, self._load_nice)
        return self._own_executor

    def _enforce_budget(self, protect: str | None = None) -> None:
        """Evict idle, unpinned models, fewest recent requests first (least recently used among
        equals), until the loaded ones and the room held for loads in progress fit the budget."""
        total = self.memory_bytes + sum(self._reserved.values())
        if total <= self._budget:
            self._over_budget = False
            return
        candidates = [
            key for key, e in self._entries.items()  # least recently used first: sorted() keeps that order
            if key != protect and e.in_flight == 0 and key not in self._pinned and key not in self._waiting
        ]
        for key in sorted(candidates, key=self._recent.__getitem__):
            if total <= self._budget:
                break
            entry = self._entries.pop(key)
            _close(entry.predictor)
            self._unloaded(key)
            total -= entry.size
            self._counters.evictions += 1
            logger.info("evicted model %s to stay under the memory budget", key)
        if total <= self._budget:
            self._over_budget = False
        elif not self._over_budget:
            self._over_budget = True  # warn once per episode, not on every request
            logger.warning(
                "model cache over budget (%d > %d MiB): remaining models are busy or pinned",
                total >> 20,
                self._budget >> 20,
            )

    def _unloaded(self, key: str) -> None:
        for callback in self._unload_callbacks:
            try:
                callback(key)
            except Exception:  # one listener's bug must not keep the model (or the others) around
                logger.exception("unload callback for %s failed", key)

    def _ensure_sweeper(self) -> None:
        if self._idle_s is None or self._sweeper is not None:
            return
        self._sweeper = asyncio.get_running_loop().create_task(
            self._sweep(), name="aiaas-model-cache-sweeper"
        )

    async def _sweep(self) -> None:
        # Check a few times per idle period so a model goes within ~25% of its deadline.
        assert self._idle_s is not None  # _ensure_sweeper starts this only when idle unloading is on
        interval = min(max(self._idle_s / 4, 0.01), 30.0)
        while True:
            await asyncio.sleep(interval)
            try:
                self.unload_idle()
            except Exception:  # keep sweeping; one bad close() must not stop scale-to-zero
                logger.exception("idle unload failed")
