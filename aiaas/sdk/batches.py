"""Batches (issue 16): `client.batches.create/retrieve/list/cancel/wait`, typed. One implementation for
the sync and async clients, like every resource; `wait` polls with `time.sleep` for the sync client and
`asyncio.sleep` for the async one."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Iterator
from typing import Any

from aiaas.protocol.responses import BatchPublic
from aiaas.sdk.resources import Request, Resource, clean, typed, typed_items
from aiaas.sdk.types import Result

BATCH_TERMINAL = ("completed", "failed", "expired", "cancelled")


class BatchRequestCounts(Result):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(Result):
    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(Result):
    object: str = "list"
    data: list[BatchError] = []


class Batch(Result, BatchPublic):
    """The server's batch shape (aiaas.protocol.responses.BatchPublic) with its nested parts typed."""

    errors: BatchErrors | None = None  # type: ignore[assignment]  # the wire's dict, typed for callers
    request_counts: BatchRequestCounts = BatchRequestCounts()  # type: ignore[assignment]  # same
    progress: dict[str, int] | None = None  # type: ignore[assignment]  # older servers leave it out

    @property
    def done(self) -> bool:
        return self.status in BATCH_TERMINAL


class BatchWaitTimeout(TimeoutError):
    """`wait(timeout=...)` ran out before the batch ended; `.batch` is its last state."""

    def __init__(self, batch: Batch, timeout: float) -> None:
        super().__init__(f"Batch {batch.id} is still {batch.status} after {timeout:g} s.")
        self.batch = batch


class Batches(Resource):
    def create(self, *, input_file_id: str, endpoint: str, completion_window: str = "24h",
               metadata: dict[str, str] | None = None, text_column: str | None = None,
               deployment: str | None = None, model: str | None = None, top_k: int | None = None) -> Batch:
        """JSONL requests (`endpoint` /v1/classifications, /v1/embeddings or a deployment's predict route),
        or a CSV/Parquet file scored with `text_column` and a `deployment` or `model`."""
        body = clean({"input_file_id": input_file_id, "endpoint": endpoint, "completion_window": completion_window,
                      "metadata": metadata, "text_column": text_column, "deployment": deployment, "model": model,
                      "top_k": top_k})
        return typed(self._c.call(Request("POST", "/v1/batches", json=body, idempotent=False)), Batch)

    def retrieve(self, batch_id: str) -> Batch:
        return typed(self._c.call(Request("GET", f"/v1/batches/{batch_id}")), Batch)

    def list(self, *, limit: int = 20) -> Iterator[Batch]:
        return typed_items(self._c.iterate("/v1/batches", limit=limit), Batch)

    def cancel(self, batch_id: str) -> Batch:
        return typed(self._c.call(Request("POST", f"/v1/batches/{batch_id}/cancel")), Batch)

    def wait(self, batch_id: str, *, timeout: float | None = None, poll_seconds: float = 1.0) -> Batch:
        """The batch once it has ended (completed, failed, expired or cancelled); BatchWaitTimeout after
        `timeout` seconds."""
        first = self.retrieve(batch_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        if inspect.isawaitable(first):
            async def later() -> Batch:
                batch: Batch = await first
                while not batch.done:
                    _check(batch, deadline, timeout)
                    await asyncio.sleep(poll_seconds)
                    batch = await self.retrieve(batch_id)  # type: ignore[misc]  # the async client's awaitable
                return batch
            return later()  # type: ignore[return-value]  # the async client's awaitable
        batch = first
        while not batch.done:
            _check(batch, deadline, timeout)
            time.sleep(poll_seconds)
            batch = self.retrieve(batch_id)
        return batch


def _check(batch: Batch, deadline: float | None, timeout: float | None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise BatchWaitTimeout(batch, timeout or 0.0)
