"""Checking a file that is already in the blob store: format, limits, PII scan, the file's PII policy.

An upload is streamed into the (encrypting) blob store as it arrives; the check then reads it back,
decrypted frame by frame. CSV and JSONL are checked as a stream (aiaas/data/streaming.py): one record
in memory, whatever the file's size, and under "redact" the redacted file is written into the store as
it is made. Parquet and JSON-array files are parsed whole, as before: the plaintext is staged in
memory (an anonymous memfd on Linux), never on disk.

A small upload is checked while its request waits (its errors are the request's answer). A larger one
(over AIAAS_UPLOAD_INLINE_BYTES) is answered at once with status "uploaded" and checked here in a
background thread of the API process (`FileChecker`), which sets its status to "processed" or "error"
(with the error in status_details), as OpenAI's file object does.

A background check holds a lease on its file (`check_owner`, `check_lease_until`; taken by an atomic
conditional UPDATE, so of several API processes exactly one gets it), renewed every third of
AIAAS_UPLOAD_CHECK_LEASE_SECONDS while the file waits or is checked. Each API process looks for files left
'uploaded' with no live lease (their server was killed or stopped before the check ended) at start and then
every third of the lease, and checks them again from the stored bytes. The check's last write only
applies while the file is still 'uploaded' and, for a leased check, still its own: a check that lost its
lease leaves the file to the one that took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from sqlalchemy import and_, or_, select, update

from aiaas.core.errors import AiaasError, NotFound
from aiaas.core.ids import new_id
from aiaas.core.settings import Settings
from aiaas.core.streams import ChunkReader
from aiaas.data.formats import Detected
from aiaas.data.limits import ReadLimits
from aiaas.data.pii_files import rejection, scan_table, write_redacted
from aiaas.data.readers import inspect_upload, load_table
from aiaas.data.streaming import check_stream, detect_source, redacted_stream, streamable
from aiaas.store import files as file_store
from aiaas.store.blobs import BlobStore, StoredBlob
from aiaas.store.db import Database, rows_changed
from aiaas.store.encrypted import private_tempdir
from aiaas.store.models import File

log = logging.getLogger(__name__)


@dataclass
class Checked:
    """The file's summary, and the blob its row records (the redacted copy under 'redact')."""

    summary: dict[str, Any]
    stored: StoredBlob


@dataclass
class Staged:
    """Plaintext held in memory: `fh` to write and read it, `path` for readers that want a path."""

    fh: BinaryIO
    path: Path

    @property
    def size(self) -> int:
        return os.fstat(self.fh.fileno()).st_size


@contextlib.contextmanager
def staged_plaintext(name: str = "upload") -> Iterator[Staged]:
    """An empty in-memory file, gone when the block ends (no directory entry on Linux)."""
    fd = None
    if hasattr(os, "memfd_create"):
        with contextlib.suppress(OSError):
            fd = os.memfd_create(f"aiaas-{name}", os.MFD_CLOEXEC)
    if fd is not None and Path(f"/proc/self/fd/{fd}").exists():
        with os.fdopen(fd, "w+b") as fh:
            yield Staged(fh, Path(f"/proc/self/fd/{fd}"))
        return
    if fd is not None:
        os.close(fd)
    with private_tempdir() as tmp:
        path = tmp / name
        with open(path, "w+b") as fh:
            yield Staged(fh, path)


def limits_for(settings: Settings | None) -> ReadLimits:
    return ReadLimits.from_settings(settings) if settings is not None else ReadLimits.current()


def check_blob(blobs: BlobStore, stored: StoredBlob, *, key: str, filename: str, purpose: str,
               pii_policy: str, settings: Settings | None, detected: Detected | None = None) -> Checked:
    """Check the stored upload; raises the file's error (InvalidFile, DecodedLimitExceeded, PiiDetected).

    On success under 'redact' with findings, the redacted copy is stored under `key` + "-redacted" and
    returned; the caller deletes the original."""
    def source() -> Iterator[bytes]:
        return blobs.read_stream(stored.uri)

    detected = detected or detect_source(source, filename=filename)
    if purpose == "batch" and detected.kind == "jsonl":
        # A batch's JSONL lines are requests, not table rows: the worker checks each line and answers
        # a bad one in the batch's error file. Stored as sent (encrypted, like every file).
        return Checked({"format": "jsonl"}, stored)
    limits = limits_for(settings)
    if not streamable(detected):
        return _check_whole(blobs, stored, key=key, filename=filename, pii_policy=pii_policy, limits=limits)
    check = check_stream(source, size=stored.size, filename=filename, limits=limits, detected=detected)
    assert check.tally is not None
    redact = pii_policy == "redact"
    report = check.tally.report(redact=redact)
    summary: dict[str, Any] = {**check.summary(), "pii": {"policy": pii_policy, **report}}
    log.debug("upload %s: %d PII findings in %d rows, policy %s", key, check.tally.found,
              report["rows_with_pii"], pii_policy)
    if pii_policy == "reject" and check.tally.found:
        raise rejection(report)
    if not (redact and check.tally.found):
        return Checked(summary, stored)
    with ChunkReader(redacted_stream(source, check, size=stored.size, limits=limits)) as redacted_bytes:
        redacted = blobs.put(f"{key}-redacted", cast(BinaryIO, redacted_bytes))
    try:
        # Read back what will be stored, so the summary describes it and it is known to parse.
        again = check_stream(lambda: blobs.read_stream(redacted.uri), size=redacted.size, filename=filename,
                             limits=limits, scan=False)
    except BaseException:
        blobs.delete(redacted.uri)
        raise
    summary.update(again.summary())
    return Checked(summary, redacted)


def _check_whole(blobs: BlobStore, stored: StoredBlob, *, key: str, filename: str, pii_policy: str,
                 limits: ReadLimits) -> Checked:
    """Parquet and JSON arrays: parsed whole from an in-memory plaintext copy (bounded by the upload limit)."""
    with staged_plaintext() as original:
        for chunk in blobs.read_stream(stored.uri):
            original.fh.write(chunk)
        original.fh.flush()
        table = load_table(original.path, filename=filename, param="file", limits=limits)
        scan = scan_table(table, redact=pii_policy == "redact")
        summary: dict[str, Any] = {
            "format": table.format, "encoding": table.encoding, "rows": table.rows, "columns": table.columns,
            "pii": {"policy": pii_policy, **scan.report},
        }
        if pii_policy == "reject" and scan.found:
            raise rejection(scan.report)
        if not scan.redactions:
            return Checked(summary, stored)
        with staged_plaintext("redacted") as redacted:
            write_redacted(original.path, filename=filename, table=table, redactions=scan.redactions,
                           out=redacted.fh)
            redacted.fh.flush()
            del table, scan
            again = inspect_upload(redacted.path, filename=filename, limits=limits)
            summary.update(format=again.format, encoding=again.encoding, rows=again.rows, columns=again.columns)
            redacted.fh.seek(0)
            return Checked(summary, blobs.put(f"{key}-redacted", redacted.fh))


# --- checks after the response --------------------------------------------------------------------


def process(db: Database, blobs: BlobStore, settings: Settings | None, *, org_id: str, file_id: str,
            owner: str | None = None) -> str:
    """Check an upload left in status 'uploaded'; returns its new status ('processed' or 'error').
    `owner`: the lease this check holds (FileChecker); its result is written only while it still does."""
    with db.session() as s:
        row = file_store.get_file(s, org_id, file_id)
        if row.status != "uploaded":
            return row.status
        stored = StoredBlob(uri=row.storage_uri, size=row.bytes, sha256=row.sha256)
        name, purpose = row.filename, row.purpose
        pii_policy = ((row.summary or {}).get("pii") or {}).get("policy", "allow")
    key = blobs.key_of(stored.uri)
    try:
        checked = check_blob(blobs, stored, key=key, filename=name, purpose=purpose, pii_policy=pii_policy,
                             settings=settings)
    except AiaasError as exc:
        return _failed(db, blobs, org_id, file_id, stored, exc.code, exc.message, owner)
    except Exception:  # a bug, not the file's fault: say so without the details
        log.exception("checking upload %s failed", file_id)
        return _failed(db, blobs, org_id, file_id, stored, "internal_error",
                       "The file could not be checked (server error); upload it again.", owner)
    outcome = _settle(db, org_id, file_id, owner, status="processed", summary=checked.summary,
                      bytes=checked.stored.size, sha256=checked.stored.sha256, storage_uri=checked.stored.uri)
    if outcome == "deleted":  # deleted while it was checked
        blobs.delete(checked.stored.uri)
        blobs.delete(stored.uri)
        return "deleted"
    if outcome != "processed":  # another check (which took the lease) wrote it: its blobs are its own
        return outcome
    if checked.stored.uri != stored.uri:
        blobs.delete(stored.uri)  # the original, PII and all, goes once the redacted copy is recorded
    return "processed"


def _failed(db: Database, blobs: BlobStore, org_id: str, file_id: str, stored: StoredBlob, code: str,
            message: str, owner: str | None = None) -> str:
    """Status 'error' with the reason; the bytes are deleted (a rejected file's PII is not kept)."""
    if owner is None:
        blobs.delete(stored.uri)
    try:
        with db.session() as s:
            summary = file_store.get_file(s, org_id, file_id).summary or {}
    except NotFound:
        return "deleted"
    outcome = _settle(db, org_id, file_id, owner, status="error",
                      summary={**summary, "error": {"code": code, "message": message}})
    if owner is not None and outcome in ("error", "deleted"):  # never the bytes of a check that took over
        blobs.delete(stored.uri)
    if outcome == "error":
        log.info("upload %s failed its check: %s", file_id, code)
    return outcome


def _settle(db: Database, org_id: str, file_id: str, owner: str | None, **values: Any) -> str:
    """Write a check's result while the file is still 'uploaded' (and, for a leased check, still held by
    `owner`), in one conditional UPDATE. Returns the status written, else the file's status now
    ('deleted' when it is gone)."""
    where = [File.id == file_id, File.org_id == org_id, File.status == "uploaded"]
    if owner is not None:
        where.append(File.check_owner == owner)
    with db.session() as s:
        done = s.execute(update(File).where(*where)
                         .values(check_owner=None, check_lease_until=None, **values))
        if rows_changed(done) == 1:
            return str(values["status"])
        now = s.scalar(select(File.status).where(File.id == file_id, File.org_id == org_id))
    if now is None:
        return "deleted"
    log.info("upload %s: this check's result dropped, the file is %s (lease held elsewhere)", file_id, now)
    return "uploaded" if now == "uploaded" else str(now)


def claim(db: Database, file_id: str, owner: str, lease_s: float, *, now: float | None = None) -> bool:
    """Take the check of an 'uploaded' file whose lease is free or run out: one UPDATE, so exactly one of
    several API processes gets it."""
    now = time.time() if now is None else now
    with db.session() as s:
        done = s.execute(
            update(File).where(File.id == file_id, File.status == "uploaded",
                               or_(File.check_lease_until.is_(None), File.check_lease_until < now))
            .values(check_owner=owner, check_lease_until=now + lease_s))
        return rows_changed(done) == 1


def left_unchecked(db: Database, *, now: float | None = None, limit: int = 100) -> list[tuple[str, str]]:
    """(org id, file id) of files left 'uploaded' with no live lease, oldest first."""
    now = time.time() if now is None else now
    with db.session() as s:
        rows = s.execute(select(File.org_id, File.id)
                         .where(and_(File.status == "uploaded",
                                     or_(File.check_lease_until.is_(None), File.check_lease_until < now)))
                         .order_by(File.created_at).limit(limit)).all()
    return [(org_id, file_id) for org_id, file_id in rows]


class FileChecker:
    """Background checks of large uploads, in `workers` threads of the API process (off the event loop),
    each under a lease on its file; `start()` (the lifespan) also takes up checks other servers left."""

    def __init__(self, db: Database, blobs: BlobStore, settings: Settings, *, workers: int = 1) -> None:
        self.db = db
        self.blobs = blobs
        self.settings = settings
        self.lease_s = settings.upload_check_lease_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{new_id('chk')}"[:120]
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aiaas-file-check")
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def submit(self, org_id: str, file_id: str) -> bool:
        """Claim the file's check and queue it; False when another process holds it (or this one stopped)."""
        if self._closed or not claim(self.db, file_id, self.owner, self.lease_s):
            return False
        return self._queue(org_id, file_id)

    def _queue(self, org_id: str, file_id: str) -> bool:
        with self._lock:
            self._pending.add(file_id)
        try:
            self._pool.submit(self._run, org_id, file_id)
        except RuntimeError:  # shut down meanwhile: the lease runs out, another server takes it
            with self._lock:
                self._pending.discard(file_id)
            return False
        return True

    def _run(self, org_id: str, file_id: str) -> None:
        try:
            process(self.db, self.blobs, self.settings, org_id=org_id, file_id=file_id, owner=self.owner)
        except Exception:
            log.exception("background check of %s failed", file_id)
        finally:
            with self._lock:
                self._pending.discard(file_id)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- leases, and checks left by stopped servers ----------------------------------------------------
    def recover(self) -> int:
        """Renew the leases of the files queued here; claim and queue the files left 'uploaded' with no live
        lease. Returns how many were taken up (blocking: a thread)."""
        now = time.time()
        with self._lock:
            mine = list(self._pending)
        if mine:
            with self.db.session() as s:
                s.execute(update(File).where(File.id.in_(mine), File.check_owner == self.owner,
                                             File.status == "uploaded")
                          .values(check_lease_until=now + self.lease_s))
        taken = 0
        for org_id, file_id in left_unchecked(self.db, now=now):
            if self._closed:
                break
            if claim(self.db, file_id, self.owner, self.lease_s, now=now) and self._queue(org_id, file_id):
                log.info("upload %s: its check was left unfinished; checking it again", file_id)
                taken += 1
        return taken

    def start(self) -> None:
        """At the lifespan's start: take up what is left now, and keep renewing and looking."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while not self._closed:
            try:
                await asyncio.to_thread(self.recover)
            except Exception:  # noqa: BLE001 - the next pass retries
                log.exception("taking up unchecked uploads failed")
            await asyncio.sleep(self.lease_s / 3)

    def close(self) -> None:
        """Stop taking work; a check under way finishes, queued ones stay 'uploaded' (their leases run out
        and a running server checks them)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._pool.shutdown(wait=False, cancel_futures=True)
