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
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from aiaas.core.errors import AiaasError, NotFound
from aiaas.core.settings import Settings
from aiaas.core.streams import ChunkReader
from aiaas.data.formats import Detected
from aiaas.data.limits import ReadLimits
from aiaas.data.pii_files import rejection, scan_table, write_redacted
from aiaas.data.readers import inspect_upload, load_table
from aiaas.data.streaming import check_stream, detect_source, redacted_stream, streamable
from aiaas.store import files as file_store
from aiaas.store.blobs import BlobStore, StoredBlob
from aiaas.store.db import Database
from aiaas.store.encrypted import private_tempdir

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


def process(db: Database, blobs: BlobStore, settings: Settings | None, *, org_id: str, file_id: str) -> str:
    """Check an upload left in status 'uploaded'; returns its new status ('processed' or 'error')."""
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
        return _failed(db, blobs, org_id, file_id, stored, exc.code, exc.message)
    except Exception:  # a bug, not the file's fault: say so without the details
        log.exception("checking upload %s failed", file_id)
        return _failed(db, blobs, org_id, file_id, stored, "internal_error",
                       "The file could not be checked (server error); upload it again.")
    try:
        with db.session() as s:
            row = file_store.get_file(s, org_id, file_id)
            row.status = "processed"
            row.summary = checked.summary
            row.bytes, row.sha256, row.storage_uri = checked.stored.size, checked.stored.sha256, checked.stored.uri
    except NotFound:  # deleted while it was checked
        blobs.delete(checked.stored.uri)
        blobs.delete(stored.uri)
        return "deleted"
    if checked.stored.uri != stored.uri:
        blobs.delete(stored.uri)  # the original, PII and all, goes once the redacted copy is recorded
    return "processed"


def _failed(db: Database, blobs: BlobStore, org_id: str, file_id: str, stored: StoredBlob, code: str,
            message: str) -> str:
    """Status 'error' with the reason; the bytes are deleted (a rejected file's PII is not kept)."""
    blobs.delete(stored.uri)
    try:
        with db.session() as s:
            row = file_store.get_file(s, org_id, file_id)
            row.status = "error"
            row.summary = {**(row.summary or {}), "error": {"code": code, "message": message}}
    except NotFound:
        return "deleted"
    log.info("upload %s failed its check: %s", file_id, code)
    return "error"


class FileChecker:
    """Background checks of large uploads, in `workers` threads of the API process (off the event loop)."""

    def __init__(self, db: Database, blobs: BlobStore, settings: Settings, *, workers: int = 1) -> None:
        self.db = db
        self.blobs = blobs
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aiaas-file-check")
        self._pending: set[str] = set()
        self._lock = threading.Lock()

    def submit(self, org_id: str, file_id: str) -> None:
        with self._lock:
            self._pending.add(file_id)
        self._pool.submit(self._run, org_id, file_id)

    def _run(self, org_id: str, file_id: str) -> None:
        try:
            process(self.db, self.blobs, self.settings, org_id=org_id, file_id=file_id)
        except Exception:
            log.exception("background check of %s failed", file_id)
        finally:
            with self._lock:
                self._pending.discard(file_id)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Stop taking work; a check under way finishes, queued ones stay 'uploaded'."""
        self._pool.shutdown(wait=False, cancel_futures=True)
