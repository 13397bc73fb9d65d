"""Fine-tuning jobs: creation, listing, events, checkpoints, and the lease protocol.

Workers claim a job by writing their id and a lease expiry; they renew the lease
(heartbeat) and every write they make is fenced by `lease_owner = me`, so a worker
that lost its lease (paused, partitioned, replaced) can no longer change the job.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import and_, or_, select, text, update
from sqlalchemy.orm import Session

from aiaas.core.clock import now
from aiaas.core.errors import InvalidRequest, not_found
from aiaas.core.ids import new_id
from aiaas.store.db import rows_changed
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


def try_claim(session: Session, job_id: str, worker_id: str, lease_s: float, *,
              max_attempts: int | None = None) -> int | None:
    """Atomically take the job if nobody holds a live lease on it; returns the attempt number (the fence
    token every later write of this claim carries), or None when it was not taken.

    A lease that expired instead of being released means the last attempt's worker died (killed, out of
    memory, paused past its lease): that is counted here, in the same compare-and-set that claims. With
    `max_attempts`, the claim that would start the attempt after the `max_attempts`-th death ends the job
    `failed` with code `worker_crashed` and the last attempt's reason instead of running it again.
    """
    t = time.time()
    row = session.execute(
        select(FineTuningJob.org_id, FineTuningJob.status, FineTuningJob.lease_owner,
               FineTuningJob.lease_expires_at, FineTuningJob.attempts, FineTuningJob.crashes,
               FineTuningJob.last_crash)
        .where(FineTuningJob.id == job_id)
    ).one_or_none()
    if row is None or row.status not in ACTIVE:
        return None
    if row.lease_owner is not None and (row.lease_expires_at or 0) >= t:
        return None
    # Compare-and-set on what was read: the claim count changes with every claim, and the owner must be
    # the one seen (a release or a heartbeat in between makes this claim lose, never double-claim).
    same = [
        FineTuningJob.id == job_id,
        FineTuningJob.status.in_(ACTIVE),
        FineTuningJob.attempts == row.attempts,
        or_(FineTuningJob.lease_owner.is_(None), FineTuningJob.lease_expires_at < t),
        FineTuningJob.lease_owner.is_(None) if row.lease_owner is None
        else FineTuningJob.lease_owner == row.lease_owner,
    ]
    crashed = row.lease_owner is not None
    crashes, reason = row.crashes or 0, row.last_crash
    if crashed:
        crashes += 1
        known = f"worker {row.lease_owner} "
        if not (row.last_crash or "").startswith(known):  # nobody saw it exit: all we know is the lease
            reason = (f"worker {row.lease_owner} stopped renewing its lease (it expired "
                      f"{t - (row.lease_expires_at or t):.0f} s before this claim) while the job was {row.status}")
    if crashed and max_attempts is not None and crashes >= max_attempts:
        message = (f"The job's worker died {crashes} times (AIAAS_JOB_MAX_ATTEMPTS={max_attempts}); last attempt: "
                   f"{reason}. Check the worker's log (out of memory?), then create the job again, e.g. with a "
                   "smaller batch_size.")
        done = session.execute(
            update(FineTuningJob).where(*same).values(
                status="failed", finished_at=now(), lease_owner=None, lease_expires_at=None, crashes=crashes,
                last_crash=reason, estimated_finish=None,
                error={"code": "worker_crashed", "message": message, "param": None})
        )
        if rows_changed(done) == 1:
            _raw_event(session, row.org_id, job_id, "error", message, data={"reason": reason, "crashes": crashes})
        return None
    result = session.execute(
        update(FineTuningJob).where(*same).values(
            lease_owner=worker_id, lease_expires_at=t + lease_s, attempts=row.attempts + 1, crashes=crashes,
            last_crash=reason)
    )
    if rows_changed(result) != 1:
        return None
    if crashed:
        _raw_event(session, row.org_id, job_id, "warn",
                   f"Attempt {row.attempts} ended without finishing ({reason}); attempt {row.attempts + 1} "
                   "resumes from the newest checkpoint.", data={"reason": reason, "crashes": crashes})
    return row.attempts + 1


def _raw_event(session: Session, org_id: str, job_id: str, level: str, message: str, *,
               data: dict[str, Any] | None = None) -> None:
    session.add(JobEvent(id=new_id("ftevent"), org_id=org_id, job_id=job_id, created_at=now(), level=level,
                         message=message, type="message", data=data))


def record_worker_exit(session: Session, owner_prefix: str, reason: str) -> list[str]:
    """A supervisor saw worker process `owner_prefix…` exit: note why on the jobs it held and expire their
    leases now, so the next claim resumes them at once (and counts the death) instead of waiting."""
    jobs = list(session.scalars(select(FineTuningJob).where(
        FineTuningJob.lease_owner.startswith(owner_prefix, autoescape=True), FineTuningJob.status.in_(ACTIVE))))
    for job in jobs:
        job.last_crash = f"worker {job.lease_owner} {reason}"
        job.lease_expires_at = time.time() - 1
    return [j.id for j in jobs]


def fence(session: Session, job_id: str, worker_id: str, lease_s: float, attempt: int | None = None) -> FineTuningJob:
    """Renew the lease and return the job; raise LeaseLost if another worker (or another claim: `attempt`,
    the number `try_claim` returned, is the fence token) holds it now.

    Called at the start of every worker write transaction: the UPDATE takes the row lock,
    so the writes that follow in the same transaction cannot interleave with a new owner.
    """
    _bound_if_paused(session, lease_s)
    t = time.time()
    mine = [FineTuningJob.id == job_id, FineTuningJob.lease_owner == worker_id]
    if attempt is not None:
        mine.append(FineTuningJob.attempts == attempt)
    result = session.execute(update(FineTuningJob).where(and_(*mine)).values(lease_expires_at=t + lease_s))
    if rows_changed(result) != 1:
        raise LeaseLost(job_id)
    job = session.get(FineTuningJob, job_id, populate_existing=True)
    assert job is not None
    return job


def _bound_if_paused(session: Session, lease_s: float) -> None:
    """PostgreSQL: if this worker stops mid-transaction (SIGSTOP, a long GC pause, a partition), the server
    ends the transaction once it has been idle for the lease, so its row lock does not hold up the worker
    that claims the job next. (SQLite has no such timeout: a process frozen inside a write transaction,
    which lasts milliseconds, holds the database until it resumes; use PostgreSQL for several nodes.)"""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {max(1000, int(lease_s * 1000))}"))


def release(session: Session, job_id: str, worker_id: str) -> None:
    session.execute(
        update(FineTuningJob)
        .where(FineTuningJob.id == job_id, FineTuningJob.lease_owner == worker_id)
        .values(lease_owner=None, lease_expires_at=None)
    )
