"""Sampled request/response logging per deployment (issue 16), off by default.

A deployment's `request_log_sample_rate` (PATCH /v1/deployments/{name} `request_logging`) is read with its
traffic (services/inference/targets.py), so the hot path decides with one random number. Every inference
route that names a deployment is sampled, one record per text:

- /v1/classifications and /v1/deployments/{name}/predict: the text and the answer as returned (label,
  score and the labels' scores; or labels; or value);
- /v2/models/{name}/infer (OIP): the decoded `text` input and the model's answer in the same shape as a
  classification (all labels ranked), whichever outputs the request asked for; a base model's: the text;
- /v1/embeddings: the text only. A vector is no label to correct and is recomputed from the text and the
  recorded model; what an embeddings record is for is a text to label (the exported file's rows
  without `label`), or to build a test set from real traffic.

Each record also has `model`, `created_at` and `source` (classifications, predict, oip, embeddings).
Sampled records go to an in-memory buffer. Every `flush_seconds` a background thread writes each
deployment's buffer as ONE JSONL blob through the encrypting blob store (the organisation's data key, like
uploads and models) and one `request_log_chunks` row: no database write per request. A flush that fails
puts its records back for the next one. Records older than the deployment's `request_log_retention_days`
are deleted by the same loop (blob and row), at most every `sweep_seconds`. `export()` joins what is kept
into a JSONL file object (`text`, `label` columns: a training file to relabel and fine-tune on).

Buffers are per API process (each of `aiaas serve --workers N` has its own): each is written at its
process's graceful shutdown (the lifespan's end, after uvicorn has answered the requests in flight), so a
sample of an answered request is kept; a process killed outright (SIGKILL) loses at most its last
`flush_seconds`. An export flushes the process that serves it; another process's newest samples appear
in an export at most `flush_seconds` later.
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
Results = list[dict[str, Any]] | Callable[[], list[dict[str, Any]]] | None


class RequestLog:
    def __init__(self, db: Database, blobs: BlobStore, *, flush_seconds: float = 5.0, sweep_seconds: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.db, self.blobs = db, blobs
        self.flush_seconds, self.sweep_seconds, self.clock = flush_seconds, sweep_seconds, clock
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time: the last one at shutdown waits for a running one
        self._buffers: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (org id, deployment id) -> records
        self._random = random.Random()  # nosec B311 - sampling, not security
        self._task: asyncio.Task[None] | None = None
        self._swept_at = float("-inf")

    # -- the hot path ------------------------------------------------------------------------------
    def maybe_record(self, rate: float, org_id: str, deployment_id: str, model_id: str, texts: list[str],
                     results: Results = None, *, source: str = "classifications") -> bool:
        """Keep this request with probability `rate` (0: never, the default). No I/O.

        `results`: one answer per text (label/score/scores, labels or value), a function that makes them
        (called only for a sampled request), or None to keep the texts alone."""
        if rate <= 0.0 or self._random.random() >= rate:
            return False
        at = int(self.clock())
        answers = results() if callable(results) else results
        if answers is None:
            records = [{"text": t, "model": model_id, "created_at": at, "source": source} for t in texts]
        else:
            records = [{"text": t, **r, "model": model_id, "created_at": at, "source": source}
                       for t, r in zip(texts, answers, strict=False)]
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
        with self._flushing:
            with self._lock:
                buffers, self._buffers = self._buffers, {}
            written = 0
            pending = list(buffers.items())
            try:
                while pending:
                    (org_id, deployment_id), records = pending[0]
                    self._write(org_id, deployment_id, records)
                    pending.pop(0)
                    written += len(records)
            finally:
                if pending:  # not written: back in front of what came in since, for the next flush
                    with self._lock:
                        for key, records in pending:
                            self._buffers[key] = records + self._buffers.get(key, [])
            return written

    def _write(self, org_id: str, deployment_id: str, records: list[dict[str, Any]]) -> None:
        chunk_id = new_id("reqlog")
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
        stored = self.blobs.put(f"{org_id}/request_logs/{deployment_id}/{chunk_id}.jsonl", io.BytesIO(body))
        try:
            with self.db.session() as s:
                s.add(RequestLogChunk(id=chunk_id, org_id=org_id, deployment_id=deployment_id,
                                      created_at=int(self.clock()), records=len(records), storage_uri=stored.uri))
        except BaseException:
            self.blobs.delete(stored.uri)  # no blob without its row: the records are written again
            raise

    @property
    def buffered(self) -> int:
        """Records sampled in this process and not written yet."""
        with self._lock:
            return sum(len(r) for r in self._buffers.values())

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
        """At the lifespan's end: stop the loop and write what is buffered. A flush the loop had started
        goes on in its thread (cancelling does not stop it); this one waits for it (`_flushing`)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        try:
            written = await asyncio.to_thread(self.flush)  # samples taken before shutdown are kept
        except Exception:  # noqa: BLE001 - said, with how many are lost, rather than a traceback at exit
            log.error("request log: %d sampled records could not be written at shutdown", self.buffered,
                      exc_info=True)
            return
        if written:
            log.info("request log: %d sampled records written at shutdown", written)


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
