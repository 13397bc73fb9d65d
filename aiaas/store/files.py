"""Uploaded files, scoped by organisation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiaas.core.clock import now
from aiaas.core.errors import not_found
from aiaas.store.models import File
from aiaas.store.pagination import Order, page


def add_file(
    session: Session,
    *,
    file_id: str,
    org_id: str,
    filename: str,
    purpose: str,
    size: int,
    sha256: str,
    storage_uri: str,
    summary: dict[str, Any],
) -> File:
    row = File(
        id=file_id,
        org_id=org_id,
        filename=filename,
        purpose=purpose,
        bytes=size,
        sha256=sha256,
        storage_uri=storage_uri,
        created_at=now(),
        status="processed",
        summary=summary,
    )
    session.add(row)
    session.flush()
    return row


def get_file(session: Session, org_id: str, file_id: str, *, param: str | None = None) -> File:
    row = session.scalar(select(File).where(File.org_id == org_id, File.id == file_id))
    if row is None:
        raise not_found("file", file_id, param=param)
    return row


def list_files(
    session: Session,
    org_id: str,
    *,
    after: str | None,
    limit: int,
    order: Order = "desc",
    purpose: str | None = None,
) -> tuple[list[File], bool]:
    stmt = select(File).where(File.org_id == org_id)
    if purpose:
        stmt = stmt.where(File.purpose == purpose)
    return page(session, stmt, File.id, after=after, limit=limit, order=order, max_limit=10_000)


def delete_file(session: Session, org_id: str, file_id: str) -> File:
    row = get_file(session, org_id, file_id)
    session.delete(row)
    return row
