"""Uploading files: stream the upload into the blob store (encrypted as it arrives), check it, record it.

The upload's bytes go straight into the encrypting blob store in chunks: never whole in memory,
never plaintext on disk (aiaas/store/encrypted.py encrypts frame by frame as the store writes).
The check (format, limits, PII scan, the file's PII policy) then reads the stored file back
(aiaas/services/file_checks.py): a rejected upload is deleted, and under "redact" the stored file
is replaced by its redacted copy before the row points at anything. Uploads up to
AIAAS_UPLOAD_INLINE_BYTES are checked before the request is answered; larger ones are recorded with
status "uploaded" and checked in the background (status "processed" or "error" when done).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from aiaas.core.errors import FileNotReady, InvalidFile, InvalidRequest
from aiaas.core.ids import new_id
from aiaas.core.settings import Settings
from aiaas.data.streaming import detect_source, streamable
from aiaas.protocol.files import PII_POLICIES, PURPOSES
from aiaas.services import quotas
from aiaas.services.file_checks import Staged, check_blob, staged_plaintext
from aiaas.store import files as file_store
from aiaas.store.blobs import BlobStore, StoredBlob
from aiaas.store.models import File

__all__ = ["Received", "Staged", "accept", "content", "delete", "receive", "safe_filename", "staged_plaintext",
           "upload", "validate_fields"]

log = logging.getLogger(__name__)
MAX_FILENAME = 255


def safe_filename(name: str | None) -> str:
    """Keep only the last path component and printable characters."""
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable() and ch not in "\x00")[:MAX_FILENAME].strip()
    return base or "upload"


@dataclass(frozen=True)
class Received:
    """An upload's bytes, stored (encrypted) but not yet checked or recorded."""

    file_id: str
    key: str
    stored: StoredBlob


def new_key(org_id: str) -> tuple[str, str]:
    file_id = new_id("file")
    return file_id, f"{org_id}/files/{file_id}"


def receive(blobs: BlobStore, *, org_id: str, src: BinaryIO, max_bytes: int) -> Received:
    """Stream `src` into the store; PayloadTooLarge past `max_bytes` (nothing kept)."""
    file_id, key = new_key(org_id)
    return Received(file_id, key, blobs.put(key, src, max_bytes=max_bytes))


def validate_fields(purpose: str, pii_policy: str) -> None:
    if purpose not in ("fine-tune", "batch"):
        allowed = "'fine-tune' or 'batch'"
        raise InvalidRequest(f"Unsupported purpose '{purpose[:40]}'; use {allowed}.", param="purpose")
    assert purpose in PURPOSES
    if pii_policy not in PII_POLICIES:
        raise InvalidRequest(f"Unknown pii_policy '{pii_policy[:40]}'; use one of {', '.join(PII_POLICIES)}.",
                             param="pii_policy")


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
    """Store, check and record an upload, checked before this returns. With `settings`, the organisation's
    storage quota applies.

    `pii_policy` "allow" stores the file as sent, "redact" stores it with every PII value replaced
    by a placeholder, "reject" raises PiiDetected (nothing stored) when the scan finds any. The
    scan's report goes into the file's summary under "pii" either way.
    """
    validate_fields(purpose, pii_policy)
    received = receive(blobs, org_id=org_id, src=src, max_bytes=max_bytes)
    return accept(session, blobs, received, org_id=org_id, filename=filename, purpose=purpose,
                  settings=settings, pii_policy=pii_policy)


def accept(session: Session, blobs: BlobStore, received: Received, *, org_id: str, filename: str | None,
           purpose: str, settings: Settings | None, pii_policy: str, defer_over: int | None = None) -> File:
    """Check and record a received upload; the blob is deleted if it is refused.

    With `defer_over`, a CSV or JSONL file larger than that is recorded with status 'uploaded' (its
    check is the caller's to schedule: file_checks.FileChecker)."""
    stored = received.stored
    try:
        validate_fields(purpose, pii_policy)
        name = safe_filename(filename)
        if stored.size == 0:
            raise InvalidFile("The file is empty; upload a CSV, JSONL or Parquet file with a header row.",
                              param="file")
        if settings is not None:
            # Before the check: the bytes are in the store already, and a check can take minutes.
            quotas.check_storage(session, settings, org_id, adding=stored.size)

        def source() -> Iterator[bytes]:
            return blobs.read_stream(stored.uri)

        detected = detect_source(source, filename=name)
        if defer_over is not None and stored.size > defer_over and streamable(detected) and not (
                purpose == "batch" and detected.kind == "jsonl"):
            return _record(session, received, org_id, name, purpose, stored, {"pii": {"policy": pii_policy}},
                           status="uploaded")
        checked = check_blob(blobs, stored, key=received.key, filename=name, purpose=purpose,
                             pii_policy=pii_policy, settings=settings, detected=detected)
    except BaseException:
        blobs.delete(stored.uri)  # nothing half-accepted stays behind
        raise
    try:
        if checked.stored.uri != stored.uri:
            blobs.delete(stored.uri)  # under 'redact': only the redacted copy is kept
            if settings is not None:
                quotas.check_storage(session, settings, org_id, adding=checked.stored.size)
        return _record(session, received, org_id, name, purpose, checked.stored, checked.summary)
    except BaseException:
        blobs.delete(checked.stored.uri)
        raise


def _record(session: Session, received: Received, org_id: str, name: str, purpose: str, stored: StoredBlob,
            summary: dict[str, Any], *, status: str = "processed") -> File:
    row = file_store.add_file(
        session, file_id=received.file_id, org_id=org_id, filename=name, purpose=purpose, size=stored.size,
        sha256=stored.sha256, storage_uri=stored.uri, summary=summary,
    )
    row.status = status
    return row


def discard(blobs: BlobStore, received: Received | None) -> None:
    """Delete a received upload that will not be accepted (a bad form)."""
    if received is not None:
        blobs.delete(received.stored.uri)


def delete(session: Session, blobs: BlobStore, *, org_id: str, file_id: str) -> File:
    row = file_store.delete_file(session, org_id, file_id)
    session.flush()
    blobs.delete(row.storage_uri)
    return row


def content(session: Session, blobs: BlobStore, *, org_id: str, file_id: str) -> tuple[File, Iterator[bytes]]:
    """The file's row and its plaintext as a stream (decrypted frame by frame, nothing written to disk)."""
    row = file_store.get_file(session, org_id, file_id)
    if row.status == "error":
        raise not_ready(row)
    return row, blobs.read_stream(row.storage_uri)


def require_processed(row: File, *, param: str) -> None:
    """A job or batch reads only checked files: 'uploaded' ones are still being checked, 'error' ones failed."""
    if row.status != "processed":
        raise not_ready(row, param=param)


def not_ready(row: File, *, param: str = "file_id") -> FileNotReady:
    if row.status == "error":
        reason = ((row.summary or {}).get("error") or {}).get("message", "")
        return FileNotReady(f"File {row.id} failed its check and cannot be used: {reason} Fix the file and "
                            "upload it again.", param=param)
    return FileNotReady(f"File {row.id} is still being checked (status '{row.status}'); retry once "
                        f"GET /v1/files/{row.id} shows status 'processed'.", param=param)
