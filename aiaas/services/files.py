"""Uploading files: read the upload into memory, check its format and scan it for PII off the event
loop, apply the file's PII policy, then store it (encrypted) and record the row.

The plaintext is staged in memory (an anonymous memfd on Linux, readable by path through
/proc/self/fd; elsewhere a private directory under /dev/shm, or a 0700 temporary directory
where there is none), never in the blob store, before the policy has run: a rejected
upload leaves nothing behind, and under "redact" only the redacted bytes are ever written
to the store. The blob store encrypts with the organisation's data key (aiaas/store/encrypted.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from aiaas.core.errors import InvalidFile, InvalidRequest, PayloadTooLarge
from aiaas.core.ids import new_id
from aiaas.core.settings import Settings
from aiaas.data.formats import detect
from aiaas.data.limits import ReadLimits
from aiaas.data.pii_files import rejection, scan_table, write_redacted
from aiaas.data.readers import inspect_upload, load_table
from aiaas.protocol.files import PII_POLICIES, PURPOSES
from aiaas.services import quotas
from aiaas.store import files as file_store
from aiaas.store.blobs import CHUNK, BlobStore
from aiaas.store.encrypted import private_tempdir
from aiaas.store.models import File

log = logging.getLogger(__name__)
MAX_FILENAME = 255


def safe_filename(name: str | None) -> str:
    """Keep only the last path component and printable characters."""
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable() and ch not in "\x00")[:MAX_FILENAME].strip()
    return base or "upload"


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


def _copy_limited(src: BinaryIO, dest: BinaryIO, max_bytes: int) -> int:
    size = 0
    while chunk := src.read(CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"File is larger than the upload limit of {max_bytes} bytes.")
        dest.write(chunk)
    dest.flush()
    return size


def upload(
    session: Session,
    blobs: BlobStore,
    *,
    org_id: str,
    src: BinaryIO,
    filename: str | None,
    purpose: str,
    max_bytes: int,
    settings: Settings | None = None,
    pii_policy: str = "allow",
) -> File:
    """Check, scan, store and record an upload. With `settings`, the organisation's storage quota applies.

    `pii_policy` "allow" stores the file as sent, "redact" stores it with every PII value replaced
    by a placeholder, "reject" raises PiiDetected (nothing stored) when the scan finds any. The
    scan's report goes into the file's summary under "pii" either way.
    """
    if purpose not in ("fine-tune", "batch"):
        allowed = "'fine-tune' or 'batch'"
        raise InvalidRequest(f"Unsupported purpose '{purpose[:40]}'; use {allowed}.", param="purpose")
    assert purpose in PURPOSES
    if pii_policy not in PII_POLICIES:
        raise InvalidRequest(f"Unknown pii_policy '{pii_policy[:40]}'; use one of {', '.join(PII_POLICIES)}.",
                             param="pii_policy")
    name = safe_filename(filename)
    file_id = new_id("file")
    with staged_plaintext() as original:
        if _copy_limited(src, original.fh, max_bytes) == 0:
            raise InvalidFile("The file is empty; upload a CSV, JSONL or Parquet file with a header row.",
                              param="file")
        if purpose == "batch" and detect(original.path, filename=name, param="file").kind == "jsonl":
            # A batch's JSONL lines are requests, not table rows: the worker checks each line and answers
            # a bad one in the batch's error file. Stored as sent (encrypted, like every file).
            return _store(session, blobs, settings, org_id, file_id, name, purpose, original, {"format": "jsonl"},
                          max_bytes=max_bytes)
        # Line-numbered errors; held to the limits on what the file decodes to (rows, cells, characters).
        limits = ReadLimits.from_settings(settings) if settings is not None else None
        table = load_table(original.path, filename=name, param="file", limits=limits)
        scan = scan_table(table, redact=pii_policy == "redact")
        summary: dict[str, Any] = {
            "format": table.format, "encoding": table.encoding, "rows": table.rows, "columns": table.columns,
            "pii": {"policy": pii_policy, **scan.report},
        }
        log.debug("upload %s: %d PII findings in %d rows, policy %s", file_id, scan.found,
                  scan.report["rows_with_pii"], pii_policy)
        if pii_policy == "reject" and scan.found:
            raise rejection(scan.report)
        if not scan.redactions:
            del table, scan  # the parsed cells are not needed to store the file as sent
            return _store(session, blobs, settings, org_id, file_id, name, purpose, original, summary,
                          max_bytes=max_bytes)
        with staged_plaintext("redacted") as redacted:
            write_redacted(original.path, filename=name, table=table, redactions=scan.redactions,
                           out=redacted.fh)
            redacted.fh.flush()
            del table, scan
            # Read back what will be stored, so the summary describes it and it is known to parse.
            again = inspect_upload(redacted.path, filename=name, limits=limits)
            summary.update(format=again.format, encoding=again.encoding, rows=again.rows,
                           columns=again.columns)
            return _store(session, blobs, settings, org_id, file_id, name, purpose, redacted, summary,
                          max_bytes=None)


def _store(session: Session, blobs: BlobStore, settings: Settings | None, org_id: str, file_id: str,
           name: str, purpose: str, staged: Staged, summary: dict[str, Any], *,
           max_bytes: int | None) -> File:
    staged.fh.seek(0)
    # The blob first: the store may create the organisation's data key in a transaction of its own,
    # which must not wait behind this one (the quota check locks the organisation row).
    stored = blobs.put(f"{org_id}/files/{file_id}", staged.fh, max_bytes=max_bytes)
    try:
        if settings is not None:
            quotas.check_storage(session, settings, org_id, adding=stored.size)
        return file_store.add_file(
            session, file_id=file_id, org_id=org_id, filename=name, purpose=purpose, size=stored.size,
            sha256=stored.sha256, storage_uri=stored.uri, summary=summary,
        )
    except BaseException:
        blobs.delete(stored.uri)  # nothing half-accepted stays behind
        raise


def delete(session: Session, blobs: BlobStore, *, org_id: str, file_id: str) -> File:
    row = file_store.delete_file(session, org_id, file_id)
    session.flush()
    blobs.delete(row.storage_uri)
    return row


def content(session: Session, blobs: BlobStore, *, org_id: str, file_id: str) -> tuple[File, Iterator[bytes]]:
    """The file's row and its plaintext as a stream (decrypted frame by frame, nothing written to disk)."""
    row = file_store.get_file(session, org_id, file_id)
    return row, blobs.read_stream(row.storage_uri)
