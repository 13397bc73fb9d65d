"""Uploading files: stream to the blob store, check the format off the event loop, record the row.

The blob store encrypts with the organisation's data key (aiaas/store/encrypted.py);
the format check reads a private decrypted copy that is gone once it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from aiaas.core.errors import InvalidFile, InvalidRequest
from aiaas.core.ids import new_id
from aiaas.core.settings import Settings
from aiaas.protocol.files import PURPOSES
from aiaas.services import quotas
from aiaas.store import files as file_store
from aiaas.store.blobs import BlobStore
from aiaas.store.models import File

log = logging.getLogger(__name__)
MAX_FILENAME = 255


def safe_filename(name: str | None) -> str:
    """Keep only the last path component and printable characters."""
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable() and ch not in "\x00")[:MAX_FILENAME].strip()
    return base or "upload"


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
) -> File:
    """Store, check and record an upload. With `settings`, the organisation's storage quota applies."""
    if purpose != "fine-tune":
        allowed = "'fine-tune'"
        raise InvalidRequest(f"Unsupported purpose '{purpose[:40]}'; use {allowed}.", param="purpose")
    assert purpose in PURPOSES
    name = safe_filename(filename)
    file_id = new_id("file")
    stored = blobs.put(f"{org_id}/files/{file_id}", src, max_bytes=max_bytes)
    try:
        if stored.size == 0:
            raise InvalidFile("The file is empty; upload a CSV, JSONL or Parquet file with a header row.",
                              param="file")
        with blobs.open_local(stored.uri) as path:
            summary = inspect(path, name)
        if settings is not None:
            quotas.check_storage(session, settings, org_id, adding=stored.size)
        return file_store.add_file(
            session, file_id=file_id, org_id=org_id, filename=name, purpose=purpose, size=stored.size,
            sha256=stored.sha256, storage_uri=stored.uri, summary=summary,
        )
    except BaseException:
        blobs.delete(stored.uri)  # nothing half-accepted stays behind
        raise


def inspect(path: Path, filename: str) -> dict[str, Any]:
    from aiaas.data import inspect_upload

    s = inspect_upload(path, filename=filename)
    summary: dict[str, Any] = {"format": s.format, "encoding": s.encoding, "rows": s.rows, "columns": s.columns}
    return summary


def delete(session: Session, blobs: BlobStore, *, org_id: str, file_id: str) -> File:
    row = file_store.delete_file(session, org_id, file_id)
    session.flush()
    blobs.delete(row.storage_uri)
    return row


def content(session: Session, blobs: BlobStore, *, org_id: str, file_id: str) -> tuple[File, Iterator[bytes]]:
    """The file's row and its plaintext as a stream (decrypted frame by frame, nothing written to disk)."""
    row = file_store.get_file(session, org_id, file_id)
    return row, blobs.read_stream(row.storage_uri)
