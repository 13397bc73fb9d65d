"""Uploading files: stream to the blob store, check the format off the event loop, record the row."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from aiaas.core.errors import InvalidFile, InvalidRequest
from aiaas.core.ids import new_id
from aiaas.protocol.files import PURPOSES
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
) -> File:
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
        summary = inspect(blobs.local_path(stored.uri), name)
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


def content_path(session: Session, blobs: BlobStore, *, org_id: str, file_id: str) -> tuple[File, Path]:
    row = file_store.get_file(session, org_id, file_id)
    return row, blobs.local_path(row.storage_uri)
