"""Fine-tuning jobs: creation, listing, events, checkpoints, and the lease protocol.

Workers claim a job by writing their id and a lease expiry; they renew the lease
(heartbeat) and every write they make is fenced by `lease_owner = me`, so a worker
that lost its lease (paused, partitioned, replaced) can no longer change the job.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from aiaas.core.clock import now
from aiaas.core.errors import InvalidRequest, not_found
from aiaas.core.ids import new_id
from aiaas.store.models import FineTuningJob, JobCheckpoint, JobEvent
from aiaas.store.pagination import Order, page

ACTIVE = ("validating_files", "queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")


class LeaseLost(Exception):
    """This worker no longer holds the job's lease; it must stop writing."""


def get_job(session: Session, org_id: str, job_id: str) -> FineTuningJob:
    row = session.scalar(select(FineTuningJob).where(FineTuningJob.org_id == org_id, FineTuningJob.id == job_id))
    if row is None:
        raise not_found("fine-tuning job", job_id)
    return row


def list_jobs(
    session: Session, org_id: str, *, after: str | None, limit: int, order: Order = "desc",
    metadata: dict[str, str] | None = None,
) -> tuple[list[FineTuningJob], bool]:
    stmt = select(FineTuningJob).where(FineTuningJob.org_id == org_id)
    rows, has_more = page(session, stmt, FineTuningJob.id, after=after, limit=limit, order=order)
    if metadata:
        rows = [r for r in rows if all((r.job_metadata or {}).get(k) == v for k, v in metadata.items())]
    return rows, has_more


def add_event(
    session: Session, job: FineTuningJob, level: str, message: str, *, type: str = "message",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    ev = JobEvent(
        id=new_id("ftevent"), org_id=job.org_id, job_id=job.id, created_at=now(), level=level,
        message=message, type=type, data=data,
    )
    session.add(ev)
    return ev


def list_events(
    session: Session, org_id: str, job_id: str, *, after: str | None, limit: int, order: Order = "desc"
) -> tuple[list[JobEvent], bool]:
    get_job(session, org_id, job_id)
    stmt = select(JobEvent).where(JobEvent.org_id == org_id, JobEvent.job_id == job_id)
    return page(session, stmt, JobEvent.id, after=after, limit=limit, order=order, max_limit=1000)


def list_checkpoints(
    session: Session, org_id: str, job_id: str, *, after: str | None, limit: int
) -> tuple[list[JobCheckpoint], bool]:
    get_job(session, org_id, job_id)
    stmt = select(JobCheckpoint).where(JobCheckpoint.org_id == org_id, JobCheckpoint.job_id == job_id)
    return page(session, stmt, JobCheckpoint.id, after=after, limit=limit, order="desc")


def request_cancel(session: Session, org_id: str, job_id: str) -> FineTuningJob:
    """Queued jobs end at once; a running one is told to stop and its worker ends it within seconds."""
    job = get_job(session, org_id, job_id)
    if job.status in TERMINAL:
        raise InvalidRequest(f"Job {job_id} has already {job.status}; only active jobs can be cancelled.",
                             param="fine_tuning_job_id")
    job.cancel_requested = True
    if job.lease_owner is None or (job.lease_expires_at or 0) < time.time():
        job.status = "cancelled"
        job.finished_at = now()
        job.lease_owner = None
        add_event(session, job, "info", "Job cancelled.")
    return job


# ---- the lease protocol (used by workers) ----------------------------------------------------
def claimable(session: Session, limit: int = 5) -> list[str]:
    t = time.time()
    stmt = (
        select(FineTuningJob.id)
        .where(
            FineTuningJob.status.in_(ACTIVE),
            or_(FineTuningJob.lease_owner.is_(None), FineTuningJob.lease_expires_at < t),
        )
        .order_by(FineTuningJob.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def try_claim(session: Session, job_id: str, worker_id: str, lease_s: float) -> bool:
    """Atomically take the job if nobody holds a live lease on it."""
    t = time.time()
    result = session.execute(
        update(FineTuningJob)
        .where(
            FineTuningJob.id == job_id,
            FineTuningJob.status.in_(ACTIVE),
            or_(FineTuningJob.lease_owner.is_(None), FineTuningJob.lease_expires_at < t),
        )
        .values(lease_owner=worker_id, lease_expires_at=t + lease_s, attempts=FineTuningJob.attempts + 1)
    )
    return result.rowcount == 1


def fence(session: Session, job_id: str, worker_id: str, lease_s: float) -> FineTuningJob:
    """Renew the lease and return the job; raise LeaseLost if another worker holds it now.

    Called at the start of every worker write transaction: the UPDATE takes the row lock,
    so the writes that follow in the same transaction cannot interleave with a new owner.
    """
    t = time.time()
    result = session.execute(
        update(FineTuningJob)
        .where(and_(FineTuningJob.id == job_id, FineTuningJob.lease_owner == worker_id))
        .values(lease_expires_at=t + lease_s)
    )
    if result.rowcount != 1:
        raise LeaseLost(job_id)
    job = session.get(FineTuningJob, job_id, populate_existing=True)
    assert job is not None
    return job


def release(session: Session, job_id: str, worker_id: str) -> None:
    session.execute(
        update(FineTuningJob)
        .where(FineTuningJob.id == job_id, FineTuningJob.lease_owner == worker_id)
        .values(lease_owner=None, lease_expires_at=None)
    )
