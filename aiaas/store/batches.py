"""Batches (issue 16): rows, listing, cancel, and the same lease protocol as fine-tuning jobs.

A worker claims a batch by writing its id, a lease expiry and the next attempt number; every later
write of that claim is fenced by (owner, attempt), so a worker that lost the batch (killed, paused,
replaced) can never add a chunk twice.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from aiaas.core.clock import now
from aiaas.core.errors import InvalidRequest, not_found
from aiaas.core.ids import new_id
from aiaas.store.db import rows_changed
from aiaas.store.models import Batch
from aiaas.store.pagination import page

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
TERMINAL = ("completed", "failed", "expired", "cancelled")
WINDOW_S = {"24h": 24 * 3600}


class BatchLeaseLost(Exception):
    """This worker no longer holds the batch's lease; it must stop writing."""


def create(session: Session, *, org_id: str, created_by: str | None, endpoint: str, input_file_id: str,
           completion_window: str, metadata: dict[str, str] | None, options: dict[str, Any]) -> Batch:
    t = now()
    row = Batch(id=new_id("batch"), org_id=org_id, created_by=created_by, endpoint=endpoint,
                input_file_id=input_file_id, completion_window=completion_window, status="validating",
                options=options, batch_metadata=metadata, total=0, completed=0, failed=0, cursor=0, parts=[],
                cancel_requested=False, attempts=0, created_at=t, expires_at=t + WINDOW_S[completion_window])
    session.add(row)
    session.flush()
    return row


def get(session: Session, org_id: str, batch_id: str) -> Batch:
    row = session.scalar(select(Batch).where(Batch.org_id == org_id, Batch.id == batch_id))
    if row is None:
        raise not_found("batch", batch_id, param="batch_id")
    return row


def list_batches(session: Session, org_id: str, *, after: str | None, limit: int) -> tuple[list[Batch], bool]:
    return page(session, select(Batch).where(Batch.org_id == org_id), Batch.id, after=after, limit=limit,
                order="desc")


def request_cancel(session: Session, org_id: str, batch_id: str) -> Batch:
    """A batch no worker holds ends `cancelled` at once; a running one goes `cancelling` and its worker
    ends it at the next chunk (what it answered so far is kept in the output file)."""
    row = get(session, org_id, batch_id)
    if row.status in TERMINAL:
        raise InvalidRequest(f"Batch {batch_id} is already {row.status}; only active batches can be cancelled.",
                             param="batch_id")
    row.cancel_requested = True
    if row.lease_owner is None or (row.lease_expires_at or 0) < time.time():
        if row.cursor == 0:
            row.status, row.cancelled_at = "cancelled", now()
            return row
    row.status, row.cancelling_at = "cancelling", now()
    return row


# ---- the lease protocol (used by workers) ----------------------------------------------------
def claimable(session: Session, limit: int = 5) -> list[str]:
    t = time.time()
    stmt = (select(Batch.id)
            .where(Batch.status.in_(ACTIVE), or_(Batch.lease_owner.is_(None), Batch.lease_expires_at < t))
            .order_by(Batch.id).limit(limit))
    return list(session.scalars(stmt))


def try_claim(session: Session, batch_id: str, worker_id: str, lease_s: float) -> int | None:
    """Compare-and-set the lease; returns the attempt number (the fence token) or None."""
    t = time.time()
    row = session.execute(select(Batch.status, Batch.lease_owner, Batch.lease_expires_at, Batch.attempts)
                          .where(Batch.id == batch_id)).one_or_none()
    if row is None or row.status not in ACTIVE:
        return None
    if row.lease_owner is not None and (row.lease_expires_at or 0) >= t:
        return None
    result = session.execute(
        update(Batch).where(
            Batch.id == batch_id, Batch.attempts == row.attempts, Batch.status.in_(ACTIVE),
            or_(Batch.lease_owner.is_(None), Batch.lease_expires_at < t),
        ).values(lease_owner=worker_id, lease_expires_at=t + lease_s, attempts=row.attempts + 1)
    )
    return row.attempts + 1 if rows_changed(result) == 1 else None


def fence(session: Session, batch_id: str, worker_id: str, lease_s: float, attempt: int) -> Batch:
    """Renew the lease and return the row (locked by the UPDATE for the rest of the transaction), or raise
    BatchLeaseLost when another claim holds it now."""
    result = session.execute(
        update(Batch).where(Batch.id == batch_id, Batch.lease_owner == worker_id, Batch.attempts == attempt)
        .values(lease_expires_at=time.time() + lease_s))
    if rows_changed(result) != 1:
        raise BatchLeaseLost(batch_id)
    row = session.get(Batch, batch_id, populate_existing=True)
    assert row is not None
    return row


def release(session: Session, batch_id: str, worker_id: str) -> None:
    session.execute(update(Batch).where(Batch.id == batch_id, Batch.lease_owner == worker_id)
                    .values(lease_owner=None, lease_expires_at=None))



