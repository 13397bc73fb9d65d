"""Running a batch in a worker process (issue 16), never in the API process.

The input is answered in chunks of `batch_chunk_lines` lines. Each chunk's answers are written to
blobs named by the chunk's first line, then ONE fenced transaction (the lease's owner and attempt are
checked, the row locked) records the chunk and moves the cursor past it. A worker killed before that
commit leaves the cursor where it was: the next claim answers the same lines again and overwrites the
same blobs, so every line ends up in the output exactly once. Usage is metered after the commit.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiaas.core.clock import now
from aiaas.core.errors import AiaasError, QuotaExceeded
from aiaas.core.ids import new_id
from aiaas.core.settings import Settings
from aiaas.data.readers import load_table
from aiaas.security.csv_safe import write_csv
from aiaas.security.ratelimit import MemoryRateLimiter
from aiaas.services import batches as batch_service
from aiaas.services import quotas
from aiaas.services.inference.metering import Caller
from aiaas.services.inference.service import InferenceService
from aiaas.services.usage import UsageRecorder
from aiaas.store import batches as batch_store
from aiaas.store import files as file_store
from aiaas.store import jobs as job_store
from aiaas.store.blobs import BlobStore
from aiaas.store.db import Database
from aiaas.store.encrypted import encrypted
from aiaas.store.models import Batch

log = logging.getLogger(__name__)
T = TypeVar("T")
YIELDED = "yielded"  # run() handed the worker back to a waiting fine-tuning job; the batch is still active


class BatchLease:
    """The lease on one batch: heartbeats in a thread; every write goes through `write()`, fenced by
    (owner, attempt). A write after the lease was lost is dropped and returns None."""

    def __init__(self, db: Database, batch_id: str, worker_id: str, attempt: int, *, lease_s: float,
                 heartbeat_s: float) -> None:
        self.db, self.batch_id, self.worker_id, self.attempt = db, batch_id, worker_id, attempt
        self.lease_s, self.heartbeat_s = lease_s, heartbeat_s
        self.lost = threading.Event()
        self.cancelled = threading.Event()
        self.shutdown = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{batch_id}", daemon=True)

    def __enter__(self) -> BatchLease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.heartbeat_s * 2)
        if not self.lost.is_set():
            try:
                with self.db.session() as s:
                    batch_store.release(s, self.batch_id, self.worker_id)
            except Exception:  # noqa: BLE001 - the lease expires instead
                log.warning("could not release lease on %s", self.batch_id, exc_info=True)

    def write(self, fn: Callable[[Any, Batch], T]) -> T | None:
        if self.lost.is_set():
            return None
        try:
            with self.db.session() as s:
                row = batch_store.fence(s, self.batch_id, self.worker_id, self.lease_s, self.attempt)
                if row.cancel_requested:
                    self.cancelled.set()
                return fn(s, row)
        except batch_store.BatchLeaseLost:
            log.warning("lease on batch %s (attempt %s) lost; this worker stops writing to it", self.batch_id,
                        self.attempt)
            self.lost.set()
            return None

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.write(lambda s, row: None)
            except Exception:  # noqa: BLE001 - a transient DB error; the next beat retries
                log.warning("heartbeat failed for %s", self.batch_id, exc_info=True)
            if self.lost.is_set():
                return


class BatchRunner:
    """What a worker needs to run batches: its own in-process runtime (models stay loaded between
    batches), an event loop for it, and a usage recorder. Built on the worker's first batch."""

    def __init__(self, settings: Settings, db: Database, blobs: BlobStore) -> None:
        self.settings = settings
        self.db = db
        self.blobs = encrypted(blobs, db, settings.master_secret())
        self.usage = UsageRecorder(db, flush_seconds=settings.usage_flush_seconds)
        self.deferred = batch_service.DeferredUsage()
        self.service = InferenceService(settings, db, self.blobs, limiter=MemoryRateLimiter(), usage=self.deferred)
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.service.aclose())
            self.loop.run_until_complete(self.usage.aclose())
        finally:
            self.loop.close()

    def run(self, lease: BatchLease) -> str | None:
        """Run the batch to its end; returns its final status, None when this worker stopped first, or
        YIELDED when it stopped at a chunk boundary for a waiting fine-tuning job (see _job_waiting)."""
        with self.db.session() as s:
            row = s.get(Batch, lease.batch_id)
            assert row is not None
            batch = _Snapshot(row)
            f = file_store.get_file(s, row.org_id, row.input_file_id)
            file_uri, filename = f.storage_uri, f.filename
        if time.time() > batch.expires_at:
            return self._finish(lease, batch, "expired")
        try:
            with self.blobs.open_local(file_uri) as path:
                inputs = _read_input(Path(path), filename, batch.options)
        except AiaasError as exc:
            return self._fail(lease, exc)
        if not inputs.total:
            return self._fail(lease, AiaasError("The input file has no lines.", code="invalid_file",
                                                param="input_file_id"))

        def started(s: Any, row: Batch) -> int:
            if row.status == "validating":
                row.status, row.in_progress_at, row.total = "in_progress", now(), inputs.total
            return row.cursor

        cursor = lease.write(started)
        if cursor is None:
            return None
        chunk_lines = self.settings.batch_chunk_lines
        # The model answers chunk N+1 while chunk N is written (blobs, then the fenced commit) in a thread:
        # commits stay in order, each checks the cursor it starts from, and none is waited for twice.
        recording: Future[int | None] | None = None
        claimed_at, yielded = time.monotonic(), False
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"record-{batch.id}") as io_pool:
            while cursor < inputs.total:
                if lease.lost.is_set() or lease.shutdown.is_set():
                    break
                if recording is not None and self._job_waiting(claimed_at):
                    yielded = True
                    break
                if lease.cancelled.is_set() or time.time() > batch.expires_at:
                    break
                end = min(cursor + chunk_lines, inputs.total)
                answered = self._answer(batch, inputs, cursor, end)
                if recording is not None and recording.result() is None:
                    return None
                recording = io_pool.submit(self._record, lease, batch, cursor, end, answered)
                cursor = end
            if recording is not None and recording.result() is None:
                return None
        if yielded:
            log.info("batch %s yields its worker at line %d of %d: a fine-tuning job is waiting", batch.id, cursor,
                     inputs.total)
            return YIELDED
        if lease.lost.is_set() or lease.shutdown.is_set():
            return None
        if time.time() > batch.expires_at and cursor < inputs.total:
            return self._finish(lease, batch, "expired")
        return self._finish(lease, batch, "cancelled" if lease.cancelled.is_set() else "completed")

    def _job_waiting(self, claimed_at: float) -> bool:
        """At a chunk boundary, once the batch has held the worker batch_yield_seconds: whether a
        fine-tuning job is waiting for a worker (one indexed query per chunk from then on)."""
        if time.monotonic() - claimed_at < self.settings.batch_yield_seconds:
            return False
        with self.db.session() as s:
            return bool(job_store.claimable(s, limit=1))

    # -- one chunk ---------------------------------------------------------------------------------
    def _chunk(self, lease: BatchLease, batch: _Snapshot, inputs: _Input, start: int, end: int) -> int | None:
        """Answer lines [start, end) and record them."""
        return self._record(lease, batch, start, end, self._answer(batch, inputs, start, end))

    def _answer(self, batch: _Snapshot, inputs: _Input, start: int, end: int) -> _Answered:
        caller = Caller(batch.org_id, batch.created_by or "", None, {})
        max_inputs = self.settings.max_inputs_per_request
        self.deferred.tokens.clear()
        if inputs.columns is None:
            lines = [(i + 1, inputs.lines[i]) for i in range(start, end)]
            chunk = self.loop.run_until_complete(batch_service.answer_jsonl(
                self.service, caller, batch.id, batch.endpoint, lines, max_inputs))
            out_text = "".join(line + "\n" for line in chunk.out)
            err_text = "".join(line + "\n" for line in chunk.err)
            ok, failed = len(chunk.out), len(chunk.err)
        else:
            opts = batch.options
            cells, chunk = self.loop.run_until_complete(batch_service.score_rows(
                self.service, caller, opts["model"], inputs.texts[start:end], top_k=opts["top_k"],
                deployment_only=opts["deployment_only"], max_inputs=max_inputs))
            buf = io.StringIO(newline="")
            write_csv(([*inputs.rows[i], *cells[i - start]] for i in range(start, end)), buf)
            out_text, err_text = buf.getvalue(), ""
            failed = sum(1 for c in cells if c[-1] is not None)
            ok = len(cells) - failed
        return _Answered(out_text, err_text, ok, failed, chunk)

    def _record(self, lease: BatchLease, batch: _Snapshot, start: int, end: int, a: _Answered) -> int | None:
        """Write the chunk's blobs, then record it and move the cursor in one fenced write; meter it after."""
        out_text, err_text, ok, failed, chunk = a.out_text, a.err_text, a.ok, a.failed, a.chunk
        part = {"start": start, "end": end,
                "out": self._put(batch, f"{start:010d}.out", out_text) if out_text else None,
                "err": self._put(batch, f"{start:010d}.err", err_text) if err_text else None}

        def commit(s: Any, row: Batch) -> int | None:
            if row.cursor != start:  # cannot happen under the fence; never record a chunk twice
                log.error("batch %s: cursor %s, chunk started at %s; chunk dropped", row.id, row.cursor, start)
                return None
            row.parts = [*(row.parts or []), part]
            row.cursor, row.completed, row.failed = end, row.completed + ok, row.failed + failed
            return end

        done = lease.write(commit)
        if done is not None:
            chunk.meter(self.usage, batch.org_id, batch.created_by)
        return done

    def _put(self, batch: _Snapshot, name: str, text: str) -> str:
        return self.blobs.put(f"{batch.org_id}/batches/{batch.id}/{name}", io.BytesIO(text.encode())).uri

    # -- the end -----------------------------------------------------------------------------------
    def _fail(self, lease: BatchLease, exc: AiaasError) -> str | None:
        def fail(s: Any, row: Batch) -> str:
            row.status, row.failed_at = "failed", now()
            row.errors = {"data": [{"code": exc.code, "message": exc.message, "param": exc.param, "line": None}]}
            return "failed"

        return lease.write(fail)

    def _finish(self, lease: BatchLease, batch: _Snapshot, status: str) -> str | None:
        """Join the parts into the output (and error) file, then end the batch, in one fenced write."""
        if lease.write(_finalizing) is None:
            return None
        with self.db.session() as s:
            row = s.get(Batch, batch.id)
            assert row is not None
            parts = list(row.parts or [])
        header = None
        if batch.options.get("text_column"):
            inputs_columns = batch.options.get("columns") or []
            header = batch_service.score_header(inputs_columns, batch.options["top_k"])
        out = self._join(batch, parts, "out", header)
        err = self._join(batch, parts, "err", None)
        over = self._over_quota(batch, [x for x in (out, err) if x is not None])
        if over is not None:  # the output files would take the organisation past its storage quota
            for stored in (out, err):
                if stored is not None:
                    self.blobs.delete(stored[0])
            failed = self._fail(lease, over)
            if failed is not None:
                self._drop_parts(parts)
            return failed

        def end(s: Any, row: Batch) -> str:
            for kind, stored in (("output", out), ("error", err)):
                if stored is None:
                    continue
                uri, size, sha = stored
                ext = "csv" if header is not None and kind == "output" else "jsonl"
                f = file_store.add_file(s, file_id=new_id("file"), org_id=row.org_id,
                                        filename=f"{row.id}_{kind}.{ext}", purpose="batch_output", size=size,
                                        sha256=sha, storage_uri=uri, summary={"format": ext})
                if kind == "output":
                    row.output_file_id = f.id
                else:
                    row.error_file_id = f.id
            row.status = status
            setattr(row, f"{status}_at", now())
            return status

        result = lease.write(end)
        if result is not None:
            self._drop_parts(parts)
        return result

    def _drop_parts(self, parts: list[dict[str, Any]]) -> None:
        for p in parts:
            for key in ("out", "err"):
                if p.get(key):
                    self.blobs.delete(p[key])

    def _over_quota(self, batch: _Snapshot, outputs: list[tuple[str, int, str]]) -> AiaasError | None:
        """Batch output files count against the organisation's stored-bytes quota, like uploads."""
        try:
            with self.db.session() as s:
                quotas.check_storage(s, self.settings, batch.org_id, adding=sum(size for _, size, _ in outputs))
        except QuotaExceeded as exc:
            return AiaasError(f"The batch's output files ({sum(size for _, size, _ in outputs)} bytes) do not fit "
                              f"in the organisation's storage: {exc.message}", code="quota_exceeded",
                              param="output_file_id")
        return None

    def _join(self, batch: _Snapshot, parts: list[dict[str, Any]], key: str,
              header: list[str] | None) -> tuple[str, int, str] | None:
        if not any(p.get(key) for p in parts) and header is None:
            return None
        import tempfile

        with tempfile.TemporaryFile(prefix="aiaas-batch-") as tmp:  # ciphertext is what the store keeps
            if header is not None:
                buf = io.StringIO(newline="")
                write_csv([], buf, header=header)
                tmp.write(buf.getvalue().encode())
            for p in sorted(parts, key=lambda p: p["start"]):
                if p.get(key):
                    for piece in self.blobs.read_stream(p[key]):
                        tmp.write(piece)
            tmp.seek(0)
            stored = self.blobs.put(f"{batch.org_id}/batches/{batch.id}/{key}put", tmp)
        return stored.uri, stored.size, stored.sha256


def _finalizing(s: Any, row: Batch) -> bool:
    if row.status in ("in_progress", "validating"):
        row.status, row.finalizing_at = "finalizing", now()
    return True


@dataclass
class _Answered:
    """A chunk answered, not yet recorded."""

    out_text: str
    err_text: str
    ok: int
    failed: int
    chunk: batch_service.Chunk


class _Snapshot:
    """The batch's fixed fields, read once (the row itself belongs to a closed session)."""

    def __init__(self, row: Batch) -> None:
        self.id, self.org_id, self.created_by = row.id, row.org_id, row.created_by
        self.endpoint, self.expires_at = row.endpoint, row.expires_at
        self.options: dict[str, Any] = dict(row.options or {})


class _Input:
    def __init__(self, lines: list[str] | None = None, *, columns: list[str] | None = None,
                 rows: list[list[Any]] | None = None, texts: list[Any] | None = None) -> None:
        self.lines = lines or []
        self.columns, self.rows, self.texts = columns, rows or [], texts or []
        self.total = len(self.lines) if columns is None else len(self.rows)


def _read_input(path: Path, filename: str, options: dict[str, Any]) -> _Input:
    """JSONL: its non-blank lines. CSV/Parquet: every row's cells and the text column."""
    column = options.get("text_column")
    if not column:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            return _Input([line for line in (raw.strip() for raw in fh) if line])
    table = load_table(path, filename=filename, param="input_file_id")
    options["columns"] = table.columns
    rows = [[table.data[c][i] for c in table.columns] for i in range(table.rows)]
    return _Input(columns=table.columns, rows=rows, texts=table.data[column])
