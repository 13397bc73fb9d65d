"""Merge concurrent requests into batches without making a lone request wait.

A queue plus one future per request. When this batcher has a free slot (fewer than
`max_concurrency` batches running) a request starts at once, alone: under light load
batching only adds latency. While batches are running, new requests queue up and the
next free slot takes as many as fit in `max_batch_size`; with a spare slot but a batch
already running, a partial batch is held at most `max_wait_ms` for company.

`fn` runs in an executor thread, never on the event loop. Its output count is checked
against its input count, and any failure reaches every caller in the batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from aiaas.core.errors import AiaasError, Unavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)
class _Request(Generic[T, R]):
    items: list[T]
    future: asyncio.Future[list[R]]


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        fn: Callable[[list[T]], list[R]],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        executor: concurrent.futures.Executor | None = None,
        max_concurrency: int = 1,
    ) -> None:
        """`fn(items) -> results` (same length, same order). `max_concurrency` batches may run
        at once (match it to the executor threads this model may use). Without an
        `executor` the batcher owns a thread pool of `max_concurrency` threads."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if not isinstance(max_batch_size, int) or isinstance(max_batch_size, bool) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
        if (
            not isinstance(max_wait_ms, int | float)
            or isinstance(max_wait_ms, bool)
            or not math.isfinite(max_wait_ms)
            or max_wait_ms < 0
        ):
            raise ValueError(f"max_wait_ms must be a finite number >= 0, got {max_wait_ms!r}")
        if executor is not None and not isinstance(executor, concurrent.futures.Executor):
            raise TypeError(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
        if not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        self._fn = fn
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_ms / 1000.0
        self._max_concurrency = max_concurrency
        self._owns_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=max_concurrency, thread_name_prefix="aiaas-batch"
        )
        self._queue: deque[_Request[T, R]] = deque()
        self._queued_items = 0
        self._running: set[asyncio.Future[list[R]]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._batches = 0
        self._items = 0
        self._largest = 0

    async def submit(self, items: Iterable[T]) -> list[R]:
        """Results for `items`, in order. Raises whatever `fn` raised for the batch."""
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
        self._queue.append(request)
        self._queued_items += len(items)
        self._dispatch()
        return await request.future

    def stats(self) -> dict:
        return {
            "queued_items": self._queued_items,
            "running_batches": len(self._running),
            "batches": self._batches,
            "items": self._items,
            "largest_batch": self._largest,
            "mean_batch": round(self._items / self._batches, 2) if self._batches else 0.0,
        }

    async def close(self) -> None:
        """Fail queued requests with a clear error; let running batches finish and answer."""
        self._closed = True
        self._cancel_timer()
        while self._queue:
            request = self._queue.popleft()
            if not request.future.done():
                request.future.set_exception(Unavailable("The model is shutting down; retry the request."))
        self._queued_items = 0
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._owns_executor:
            self._executor.shutdown(wait=False)

    # -- scheduling (always on the loop thread) -------------------------------------------
    def _dispatch(self, *, waited: bool = False) -> None:
        while self._queue and len(self._running) < self._max_concurrency:
            self._drop_cancelled()
            if not self._queue:
                return
            if self._running and self._queued_items < self._max_batch_size and not waited:
                # A batch is running and a slot is free: hold this partial batch briefly so
                # concurrent requests share one model call instead of each taking a slot.
                if self._timer is None:
                    assert self._loop is not None
                    self._timer = self._loop.call_later(self._max_wait_s, self._on_timer)
                return
            self._start(self._take_batch())
        if not self._queue:
            self._cancel_timer()

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch(waited=True)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drop_cancelled(self) -> None:
        while self._queue and self._queue[0].future.done():  # its caller gave up
            self._queued_items -= len(self._queue.popleft().items)

    def _take_batch(self) -> list[_Request[T, R]]:
        batch: list[_Request[T, R]] = []
        size = 0
        while self._queue:
            request = self._queue[0]
            if request.future.done():
                self._queue.popleft()
                self._queued_items -= len(request.items)
                continue
            # Requests stay whole; one larger than max_batch_size runs as its own batch.
            if batch and size + len(request.items) > self._max_batch_size:
                break
            self._queue.popleft()
            self._queued_items -= len(request.items)
            batch.append(request)
            size += len(request.items)
        return batch

    def _start(self, batch: list[_Request[T, R]]) -> None:
        if not batch:
            return
        items = [item for request in batch for item in request.items]
        assert self._loop is not None
        try:
            running = self._loop.run_in_executor(self._executor, self._fn, items)
        except RuntimeError as exc:  # the executor was shut down under us
            self._settle(batch, error=Unavailable(f"The model is shutting down ({exc}); retry the request."))
            return
        self._running.add(running)
        self._batches += 1
        self._items += len(items)
        self._largest = max(self._largest, len(items))
        running.add_done_callback(partial(self._finished, batch, len(items)))

    def _finished(self, batch: list[_Request[T, R]], count: int, running: asyncio.Future[list[R]]) -> None:
        self._running.discard(running)
        if running.cancelled():
            self._settle(batch, error=Unavailable("The batch was cancelled; retry the request."))
        elif (exc := running.exception()) is not None:
            self._settle(batch, error=exc)
        else:
            results = running.result()
            try:
                results = list(results)
            except TypeError:
                results = None  # type: ignore[assignment]
            if results is None or len(results) != count:
                got = "a non-sequence" if results is None else f"{len(results)} results"
                logger.error("batch function returned %s for %d inputs", got, count)
                self._settle(batch, error=AiaasError(f"The model returned {got} for {count} inputs."))
            else:
                self._settle(batch, results=results)
        if not self._closed:
            self._dispatch()

    @staticmethod
    def _settle(
        batch: list[_Request[T, R]], *, results: list[R] | None = None, error: BaseException | None = None
    ) -> None:
        offset = 0
        for request in batch:
            n = len(request.items)
            if not request.future.done():
                if error is not None:
                    request.future.set_exception(error)
                else:
                    assert results is not None
                    request.future.set_result(results[offset : offset + n])
            offset += n
