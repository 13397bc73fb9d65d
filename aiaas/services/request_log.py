"""Sampled request/response logging per deployment (issue 16), off by default.

A deployment's `request_log_sample_rate` (PATCH /v1/deployments/{name} `request_logging`) is read with its
traffic (services/inference/targets.py), so the hot path decides with one random number: a sampled
classification appends one record per text (text, the answer as returned: label, score and the labels'
scores, or labels, or value; model, time) to an
in-memory buffer. Every `flush_seconds` a background thread writes each deployment's buffer as ONE
JSONL blob through the encrypting blob store (the organisation's data key, like uploads and models) and
one `request_log_chunks` row: no database write per request. Records older than the deployment's
`request_log_retention_days` are deleted by the same loop (blob and row), at most every `sweep_seconds`.
`export()` joins what is kept into a JSONL file object (`text`, `label` columns: a training file to
relabel and fine-tune on). Buffers are per process; a process killed outright loses at most its last
`flush_seconds` of samples.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select

from aiaas.core.ids import new_id
from aiaas.store.blobs import BlobStore
from aiaas.store.db import Database
from aiaas.store.models import Deployment, RequestLogChunk

log = logging.getLogger(__name__)
DAY = 86400


class RequestLog:
    def __init__(self, db: Database, blobs: BlobStore, *, flush_seconds: float = 5.0, sweep_seconds: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.db, self.blobs = db, blobs
        self.flush_seconds, self.sweep_seconds, self.clock = flush_seconds, sweep_seconds, clock
        self._lock = threading.Lock()
        self._buffers: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (org id, deployment id) -> records
        self._random = random.Random()  # nosec B311 - sampling, not security
        self._task: asyncio.Task[None] | None = None
        self._swept_at = float("-inf")

    # -- the hot path ------------------------------------------------------------------------------
    def maybe_record(self, rate: float, org_id: str, deployment_id: str, model_id: str, texts: list[str],
                     results: list[dict[str, Any]]) -> bool:
        """Keep this request with probability `rate` (0: never, the default). No I/O."""
        if rate <= 0.0 or self._random.random() >= rate:
            return False
        at = int(self.clock())
        records = [{"text": t, **r, "model": model_id, "created_at": at}  # label/score/scores, labels or value
                   for t, r in zip(texts, results, strict=False)]
        with self._lock:
            self._buffers.setdefault((org_id, deployment_id), []).extend(records)
        return True

    # -- the background loop -----------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None and self.flush_seconds > 0:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await asyncio.to_thread(self.flush)
                if self.clock() - self._swept_at >= self.sweep_seconds:
                    await asyncio.to_thread(self.sweep)
            except Exception:  # noqa: BLE001 - the next pass retries
                log.exception("request log flush failed")

    def flush(self) -> int:
        """Write every buffer as one encrypted blob and one row per deployment; returns records written."""
        with self._lock:
            buffers, self._buffers = self._buffers, {}
        written = 0
        for (org_id, deployment_id), records in buffers.items():
            chunk_id = new_id("reqlog")
            body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
            stored = self.blobs.put(f"{org_id}/request_logs/{deployment_id}/{chunk_id}.jsonl", io.BytesIO(body))
            with self.db.session() as s:
                s.add(RequestLogChunk(id=chunk_id, org_id=org_id, deployment_id=deployment_id,
                                      created_at=int(self.clock()), records=len(records), storage_uri=stored.uri))
            written += len(records)
        return written

    def sweep(self) -> int:
        """Delete records past their deployment's retention (and those of deleted deployments)."""
        self._swept_at = now = self.clock()
        with self.db.session() as s:
            retention = dict(s.execute(select(Deployment.id, Deployment.request_log_retention_days)).all())
            rows = s.execute(select(RequestLogChunk.id, RequestLogChunk.deployment_id, RequestLogChunk.created_at,
                                    RequestLogChunk.storage_uri)).all()
        expired = [(cid, uri) for cid, dep, created, uri in rows
                   if dep not in retention or created < now - retention[dep] * DAY]
        for cid, uri in expired:
            self.blobs.delete(uri)
            with self.db.session() as s:
                s.execute(delete(RequestLogChunk).where(RequestLogChunk.id == cid))
        return len(expired)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await asyncio.to_thread(self.flush)  # samples taken before shutdown are kept


def export(db: Database, blobs: BlobStore, org_id: str, deployment_id: str) -> tuple[bytes, int]:
    """Every record kept for a deployment, oldest first, as JSONL; and how many (blocking)."""
    with db.session() as s:
        uris = list(s.scalars(select(RequestLogChunk.storage_uri)
                              .where(RequestLogChunk.org_id == org_id, RequestLogChunk.deployment_id == deployment_id)
                              .order_by(RequestLogChunk.created_at, RequestLogChunk.id)))
    out = io.BytesIO()
    for uri in uris:
        for piece in blobs.read_stream(uri):
            out.write(piece)
    data = out.getvalue()
    return data, data.count(b"\n")
