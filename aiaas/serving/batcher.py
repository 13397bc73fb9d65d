"""Continuous, length-aware batching: worker threads pull small batches from one pool.

Requests add their items to a pool. Up to `max_concurrency` workers (tasks on an
executor) take batches from it, each at most `max_batch_size` items: the oldest waiting
item plus the waiting items nearest to it in `length`, so a batch pads only to similar
lengths and no item waits behind an endless stream of better-fitting newcomers. A worker
that finishes a batch takes the next one at once, without a round trip through the event
loop, and a request is answered as soon as its last item is done, not when a large batch
around it is.

- Light load: an idle batcher starts a worker on submit; the request runs alone, at once.
- Heavy load: batches fill up to `max_batch_size` from everything waiting ("sized by load").
- Results keep each request's order; a batch function returning the wrong number of
  results, or raising, fails every request with an item in that batch (and drops their
  remaining items), and the batcher goes on serving the others.
- Shared executors: a worker hands its thread back after `batches_per_turn` batches, so
  batchers of other models on the same executor get their turn.

`fn` runs in executor threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiaas.core.errors import AiaasError, Unavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)
class _Request(Generic[T, R]):
    items: list[T]
    future: asyncio.Future[list[R]]
    results: list[R | None] = field(init=False)  # filled in item order as batches finish
    remaining: int = field(init=False)  # items not done yet
    dead: bool = False  # failed or abandoned by its caller: its other items are skipped

    def __post_init__(self) -> None:
        self.results = [None] * len(self.items)
        self.remaining = len(self.items)


@dataclass(eq=False, slots=True)
class _Item(Generic[T, R]):
    request: _Request[T, R]
    index: int
    length: int


WINDOW = 64  # waiting items a batch is chosen from


def text_length(item: object) -> int:
    """`length` for texts: characters, a cheap stand-in for tokens. Non-strings count as 0
    so the batch function, not the batcher, reports them with its own error."""
    return len(item) if isinstance(item, str) else 0


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        fn: Callable[[list[T]], list[R]],
        *,
        max_batch_size: int = 32,
        executor: concurrent.futures.Executor | None = None,
        max_concurrency: int = 1,
        length: Callable[[T], int] | None = None,
        batches_per_turn: int = 8,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """`fn(items) -> results` (same length, same order). At most `max_concurrency` batches
        run at once (match it to the executor threads this model may use); without an
        `executor` the batcher owns a pool of that many threads. `length(item)` groups
        similar items into a batch (e.g. `len` for texts); without it batches are FIFO. `on_batch(size)`
        is called in the worker thread after each batch ran (metrics); it must be cheap and not raise."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if executor is not None and not isinstance(executor, concurrent.futures.Executor):
            raise TypeError(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
        if length is not None and not callable(length):
            raise TypeError(f"length must be callable, got {type(length).__name__}")
        self._fn = fn
        self._max_batch_size = _positive_int("max_batch_size", max_batch_size)
        self._max_concurrency = _positive_int("max_concurrency", max_concurrency)
        self._batches_per_turn = _positive_int("batches_per_turn", batches_per_turn)
        self._length = length
        self._on_batch = on_batch
        self._owns_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=max_concurrency, thread_name_prefix="aiaas-batch"
        )
        self._lock = threading.Lock()  # guards everything below that workers touch
        self._pool: list[_Item[T, R]] = []  # in arrival order
        self._workers = 0
        self._running = 0
        self._batches = 0
        self._items = 0
        self._largest = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._idle: asyncio.Event | None = None

    async def submit(self, items: Iterable[T]) -> list[R]:
        """Results for `items`, in order. Raises whatever `fn` raised for a batch holding one of them."""
        if self._closed:
            raise Unavailable("The model is shutting down; retry the request.")
        items = list(items)
        if not items:
            return []
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a MicroBatcher is bound to the event loop that first used it")
        request: _Request[T, R] = _Request(items, loop.create_future())
        lengths = [self._length(item) for item in items] if self._length else [0] * len(items)
        with self._lock:
            self._pool.extend(_Item(request, index, size) for index, size in enumerate(lengths))
            start = max(0, min(self._max_concurrency - self._workers, -(-len(self._pool) // self._max_batch_size)))
            self._workers += start
        for _ in range(start):
            self._spawn()
        try:
            return await request.future
        except asyncio.CancelledError:
            with self._lock:  # the caller gave up: its waiting items need not run
                request.dead = True
            raise

    def stats(self) -> dict[str, float]:
        with self._lock:
            return {
                "queued_items": len(self._pool),
                "running_batches": self._running,
                "workers": self._workers,
                "batches": self._batches,
                "items": self._items,
                "largest_batch": self._largest,
                "mean_batch": round(self._items / self._batches, 2) if self._batches else 0.0,
            }

    async def close(self) -> None:
        """Fail waiting requests with a clear error; let running batches finish and answer."""
        self._closed = True
        with self._lock:
            waiting = self._drain_waiting()
            busy = self._workers > 0
            if busy:
                self._idle = asyncio.Event()
        for request in waiting:
            if not request.future.done():
                request.future.set_exception(Unavailable("The model is shutting down; retry the request."))
        if busy and self._idle is not None:
            await self._idle.wait()
        if self._owns_executor:
            self._executor.shutdown(wait=False)

    # -- workers (executor threads) ---------------------------------------------------------
    def _spawn(self) -> None:
        try:
            self._executor.submit(self._work)
        except RuntimeError as exc:  # the executor was shut down under us
            self._abandon(Unavailable(f"The model is shutting down ({exc}); retry the request."))

    def _work(self) -> None:
        for _ in range(self._batches_per_turn):
            with self._lock:
                batch = self._take()
                if not batch:
                    self._workers -= 1
                    self._notify_idle()
                    return
                self._running += 1
            self._run(batch)
        # Hand the thread back (other models may share this executor) and queue a continuation.
        self._spawn()

    def _take(self) -> list[_Item[T, R]]:
        """Under the lock: the oldest live item plus its nearest-length companions among the
        next WINDOW waiting (bounded work per batch however long the queue is)."""
        window = [item for item in self._pool[:WINDOW] if not item.request.dead]
        rest = self._pool[WINDOW:]
        if len(window) <= self._max_batch_size:
            batch = window
            window = []
        else:
            oldest = window[0]  # the pool is in arrival order
            ranked = sorted(range(len(window)), key=lambda i: (abs(window[i].length - oldest.length), i))
            chosen = set(ranked[: self._max_batch_size])
            batch = [item for i, item in enumerate(window) if i in chosen]
            window = [item for i, item in enumerate(window) if i not in chosen]
        self._pool = window + rest
        return batch

    def _run(self, batch: list[_Item[T, R]]) -> None:
        values = [item.request.items[item.index] for item in batch]
        error: BaseException | None = None
        results: list[R] | None = None
        try:
            out = self._fn(values)
        except BaseException as exc:  # noqa: BLE001 - every caller in the batch gets it
            error = exc
        else:
            try:
                results = list(out)
            except TypeError:
                logger.error("batch function returned a non-sequence for %d inputs", len(batch))
                error = AiaasError(f"The model returned a non-sequence for {len(batch)} inputs.")
        if results is not None and len(results) != len(batch):
            logger.error("batch function returned %d results for %d inputs", len(results), len(batch))
            error = AiaasError(f"The model returned {len(results)} results for {len(batch)} inputs.")
        done: list[tuple[_Request[T, R], BaseException | None]] = []
        with self._lock:
            self._running -= 1
            self._batches += 1
            self._items += len(batch)
            self._largest = max(self._largest, len(batch))
            for position, item in enumerate(batch):
                request = item.request
                if request.dead:
                    continue
                if error is not None:
                    request.dead = True
                    done.append((request, error))
                    continue
                assert results is not None
                request.results[item.index] = results[position]
                request.remaining -= 1
                if request.remaining == 0:
                    done.append((request, None))
        if done:
            self._deliver(done)
        if self._on_batch is not None:
            self._on_batch(len(batch))

    def _deliver(self, done: list[tuple[_Request[T, R], BaseException | None]]) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_settle, done)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _notify_idle(self) -> None:
        """Under the lock, as the last worker leaves: wake close() if it waits."""
        if self._workers == 0 and self._idle is not None and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._idle.set)
            except RuntimeError:
                pass

    def _drain_waiting(self) -> list[_Request[T, R]]:
        """Under the lock: empty the pool and mark its live requests dead (each once)."""
        waiting = list({id(item.request): item.request for item in self._pool if not item.request.dead}.values())
        self._pool.clear()
        for request in waiting:
            request.dead = True
        return waiting

    def _abandon(self, error: BaseException) -> None:
        """A worker could not be started (the executor is shut down): once no worker is
        left, fail everything waiting."""
        with self._lock:
            self._workers -= 1
            if self._workers > 0:
                return
            waiting = self._drain_waiting()
            self._notify_idle()
        if not waiting or self._loop is None:
            return
        done: list[tuple[_Request[T, R], BaseException | None]] = [(request, error) for request in waiting]
        try:
            on_loop = asyncio.get_running_loop() is self._loop  # called from submit()
        except RuntimeError:
            on_loop = False  # a worker thread's continuation
        if on_loop:
            _settle(done)
        else:
            self._deliver(done)


def _settle(done: list[tuple[_Request[Any, Any], BaseException | None]]) -> None:
    """On the loop: resolve finished requests (a caller that gave up is skipped)."""
    for request, error in done:
        if request.future.done():
            continue
        if error is not None:
            request.future.set_exception(error)
        else:
            request.future.set_result(request.results)
