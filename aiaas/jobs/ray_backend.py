"""Fine-tuning on Ray (install extra `ray`): a dispatcher claims jobs from the store and runs each as a Ray task.

The lease protocol is the embedded one (aiaas/jobs/lease.py), with one hand-over:

1. The dispatcher claims a job under a *claim id* and submits a task. Until the task
   starts, the dispatcher renews that lease, so a job waiting for a free node is not
   re-claimed by someone else.
2. The task, in a fresh worker process (`max_calls=1`), moves the lease from the claim
   id to its own *task id* in one fenced UPDATE, then runs `Lease` + `run_job` exactly
   as `aiaas worker` does: heartbeats, fenced writes, checkpoints, resume.
3. When the dispatcher's renewal fails, the task has taken over; from then on only the
   task heartbeats. Ray never retries a task (`max_retries=0`): a dead task's lease is
   taken back, an event says why, and the lease is released so the job is claimed again
   and resumes from its newest checkpoint. A dispatcher that dies takes its tasks with it
   (Ray kills the tasks of a dead owner); their leases expire and any dispatcher or
   worker resumes the jobs.

Cancel: the running task sees `cancel_requested` through its lease and stops at the next
step; if it has not finished `cancel_grace_s` later, the dispatcher kills it
(`ray.cancel(force=True)`) and records the cancellation itself.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from aiaas.cluster.node import blob_store_for, settings_from_payload, settings_payload
from aiaas.core.clock import now
from aiaas.core.errors import ConfigurationError
from aiaas.core.settings import Settings
from aiaas.jobs.lease import Lease
from aiaas.store import jobs as job_store
from aiaas.store.db import Database, rows_changed
from aiaas.store.models import FineTuningJob

if importlib.util.find_spec("ray") is None:  # pragma: no cover - depends on the install
    raise ImportError("Training on Ray needs the ray extra: pip install 'aiaas[ray]'")

log = logging.getLogger(__name__)

DEFAULT_CANCEL_GRACE_S = 30.0
DEFAULT_MAX_ATTEMPTS = 5  # a job whose training process keeps dying (OOM, bad node) fails instead of looping
TASK_SUFFIX = "/task"
TASK_NAME = "aiaas.fine_tune"  # the worker's process title becomes `ray::aiaas.fine_tune`


# ---- the task side (runs in a Ray worker process) -------------------------------------------
def hand_over(db: Database, job_id: str, from_owner: str, to_owner: str, lease_s: float) -> bool:
    """Move a live lease between two ids atomically; False when `from_owner` no longer holds it."""
    with db.session() as s:
        result = s.execute(
            update(FineTuningJob)
            .where(FineTuningJob.id == job_id, FineTuningJob.lease_owner == from_owner)
            .values(lease_owner=to_owner, lease_expires_at=time.time() + lease_s)
        )
        return rows_changed(result) == 1


def run_job_task(payload: dict[str, Any], job_id: str, claim_id: str) -> str:
    """The body of one Ray task: take the lease over from the dispatcher and run the job.

    Returns the job's final status as `Worker.run_once` would ('lost' when the claim was gone).
    """
    settings = settings_from_payload(payload)
    db = Database(settings.sqlalchemy_url)
    owner = claim_id + TASK_SUFFIX
    try:
        if not hand_over(db, job_id, claim_id, owner, settings.lease_seconds):
            log.info("claim %s on %s was gone before the task started", claim_id, job_id)
            return "lost"
        from aiaas.jobs.runner import fail, run_job

        lease = Lease(db, job_id, owner, lease_s=settings.lease_seconds, heartbeat_s=settings.heartbeat_seconds)
        with lease:
            node = socket.gethostname()
            lease.write(lambda s, job: job_store.add_event(
                s, job, "info", f"Training runs on Ray node {node} (process {os.getpid()}).",
                data={"node": node, "pid": os.getpid()}))
            try:
                settings.master_secret()  # each node brings its own: it never travels through Ray
            except ConfigurationError as exc:
                fail(lease, ConfigurationError(f"Node {node} has no master secret: {exc.message}"))
                return "failed"
            return run_job(lease, settings, blob_store_for(settings))
    finally:
        db.dispose()


# ---- the dispatcher side (one process holding the Ray driver) ---------------------------------
@dataclass
class _Run:
    job_id: str
    claim_id: str
    ref: Any
    started: bool = False  # the task took the lease over
    cancel_seen: float | None = None
    killed: bool = False  # we force-cancelled it

    @property
    def task_owner(self) -> str:
        return self.claim_id + TASK_SUFFIX


class RayDispatcher:
    """Claims jobs and runs each as a Ray task; see the module docstring for the protocol."""

    def __init__(
        self,
        settings: Settings,
        ray: Any,
        *,
        num_cpus: float = 1,
        num_gpus: float = 0,
        max_jobs: int | None = None,
        cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        dispatcher_id: str | None = None,
    ) -> None:
        if num_cpus <= 0 or num_gpus < 0 or (max_jobs is not None and max_jobs < 1):
            raise ValueError("num_cpus must be > 0, num_gpus >= 0 and max_jobs >= 1 (or None: what the cluster fits)")
        self.settings = settings
        self.ray = ray
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.max_jobs = max_jobs
        self.cancel_grace_s = cancel_grace_s
        self.max_attempts = max_attempts
        # lease_owner is 80 characters; every id derived from this one stays well inside.
        self.dispatcher_id = dispatcher_id or f"ray:{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.db = Database(settings.sqlalchemy_url)
        self.runs: dict[str, _Run] = {}
        self.stopping = threading.Event()
        self._claims = 0
        threads = max(1, math.floor(num_cpus))
        self._payload = settings_payload(settings, training_threads=settings.training_threads or threads)
        # A fresh process per job (torch state, memory) and no Ray retries: our leases resume jobs.
        self._task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0, max_calls=1)(
            run_job_task).options(name=TASK_NAME)

    # ---- one pass of the loop ----------------------------------------------------------------
    def run_once(self) -> int:
        """Reap finished tasks, renew claims, enforce cancels, claim new jobs. Returns jobs submitted."""
        self._reap()
        self._renew_claims()
        self._enforce_cancels()
        return self._claim_new()

    def capacity(self) -> int:
        """How many jobs may run at once: `max_jobs`, else what the cluster's CPUs (and GPUs) fit now."""
        if self.max_jobs is not None:
            return self.max_jobs
        total = self.ray.cluster_resources()
        fits = math.floor(total.get("CPU", 0) / self.num_cpus)
        if self.num_gpus:
            fits = min(fits, math.floor(total.get("GPU", 0) / self.num_gpus))
        return max(fits, 0)

    def _claim_new(self) -> int:
        free = self.capacity() - len(self.runs)
        if free <= 0:
            return 0
        with self.db.session() as s:
            candidates = [j for j in job_store.claimable(s, limit=free + 5) if j not in self.runs]
        submitted = 0
        for job_id in candidates:
            if submitted >= free:
                break
            self._claims += 1
            claim_id = f"{self.dispatcher_id}:{self._claims}"
            with self.db.session() as s:
                if not job_store.try_claim(s, job_id, claim_id, self.settings.lease_seconds):
                    continue
            ref = self._task.remote(self._payload, job_id, claim_id)
            self.runs[job_id] = _Run(job_id=job_id, claim_id=claim_id, ref=ref)
            log.info("dispatcher %s submitted %s as %s", self.dispatcher_id, job_id, claim_id)
            submitted += 1
        return submitted

    def _renew_claims(self) -> None:
        """Keep the lease of jobs whose task has not started; a failed renewal means the task took over."""
        for run in self.runs.values():
            if run.started:
                continue
            try:
                with self.db.session() as s:
                    job = job_store.fence(s, run.job_id, run.claim_id, self.settings.lease_seconds)
                    if job.cancel_requested:  # cancelled while waiting for a node: it never starts
                        self.ray.cancel(run.ref)
                        job.status, job.finished_at, job.lease_owner = "cancelled", now(), None
                        job_store.add_event(s, job, "info", "Job cancelled.")
                        run.killed = True
                        run.started = True
            except job_store.LeaseLost:
                run.started = True

    def _enforce_cancels(self) -> None:
        started = [r for r in self.runs.values() if r.started and not r.killed]
        if not started:
            return
        with self.db.session() as s:
            wanted = set(s.scalars(select(FineTuningJob.id).where(
                FineTuningJob.id.in_([r.job_id for r in started]), FineTuningJob.cancel_requested.is_(True))))
        t = time.monotonic()
        for run in started:
            if run.job_id not in wanted:
                continue
            if run.cancel_seen is None:
                run.cancel_seen = t  # the task's lease sees it too and should stop within a step
            elif t - run.cancel_seen >= self.cancel_grace_s:
                log.warning("job %s still running %.0fs after cancel; killing its task", run.job_id,
                            t - run.cancel_seen)
                self.ray.cancel(run.ref, force=True)
                run.killed = True

    def _reap(self) -> None:
        if not self.runs:
            return
        refs = [r.ref for r in self.runs.values()]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        done = set(ready)  # ObjectRefs hash and compare by object id
        for job_id, run in list(self.runs.items()):
            if run.ref not in done:
                continue
            del self.runs[job_id]
            try:
                status = self.ray.get(run.ref)
                log.info("job %s task ended: %s", job_id, status)
            except Exception as exc:  # noqa: BLE001 - any task failure (killed worker, dead node, cancel)
                if run.killed:
                    self._finish_cancel(run)
                else:
                    self._recover(run, exc)

    # ---- taking a dead task's lease back --------------------------------------------------------
    def _take_back(self, run: _Run) -> Lease | None:
        """Own the job again under the claim id, whoever of (task, nobody) holds it now."""
        lease_s = self.settings.lease_seconds
        if hand_over(self.db, run.job_id, run.task_owner, run.claim_id, lease_s):
            return Lease(self.db, run.job_id, run.claim_id, lease_s=lease_s, heartbeat_s=self.settings.heartbeat_seconds)
        with self.db.session() as s:
            owned = job_store.try_claim(s, run.job_id, run.claim_id, lease_s)
        if owned:
            return Lease(self.db, run.job_id, run.claim_id, lease_s=lease_s, heartbeat_s=self.settings.heartbeat_seconds)
        return None  # another worker holds it, or the job has ended

    def _finish_cancel(self, run: _Run) -> None:
        lease = self._take_back(run)
        if lease is None:
            return

        def write(s: Any, job: FineTuningJob) -> None:
            if job.status in job_store.TERMINAL:
                return
            job.status = "cancelled"
            job.finished_at = now()
            job_store.add_event(s, job, "info", "Job cancelled (its training process was stopped).")

        lease.write(write)
        with self.db.session() as s:
            job_store.release(s, run.job_id, run.claim_id)

    def _recover(self, run: _Run, exc: Exception) -> None:
        """A task died without finishing: say so, then free the job for a new attempt (or fail it)."""
        log.warning("job %s: task %s died: %s", run.job_id, run.task_owner, exc)
        lease = self._take_back(run)
        if lease is None:
            return
        reason = type(exc).__name__

        def write(s: Any, job: FineTuningJob) -> None:
            if job.status in job_store.TERMINAL:
                return
            if job.attempts >= self.max_attempts:
                message = (f"Training stopped: its process died {job.attempts} times (last: {reason}). "
                           "Check the Ray node logs (out of memory?) and create the job again.")
                job.status, job.finished_at = "failed", now()
                job.error = {"code": "internal_error", "message": message, "param": None}
                job_store.add_event(s, job, "error", message)
            else:
                job_store.add_event(s, job, "warn", f"The training process stopped unexpectedly ({reason}); "
                                    "the job resumes from its last checkpoint.")

        lease.write(write)
        with self.db.session() as s:
            job_store.release(s, run.job_id, run.claim_id)

    # ---- lifecycle -------------------------------------------------------------------------------
    def run_forever(self) -> None:
        log.info("ray dispatcher %s started (%s CPU, %s GPU per job)", self.dispatcher_id, self.num_cpus,
                 self.num_gpus)
        while not self.stopping.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("dispatcher loop error")
            self.stopping.wait(self.settings.poll_seconds)
        self.shutdown()

    def shutdown(self) -> None:
        """Stop this dispatcher's tasks and free their jobs at once, so another dispatcher resumes them."""
        self.stopping.set()
        for run in list(self.runs.values()):
            try:
                self.ray.cancel(run.ref, force=True)
            except Exception:
                log.debug("cancel of %s failed", run.job_id, exc_info=True)
        for run in list(self.runs.values()):
            for owner in (run.task_owner, run.claim_id):
                try:
                    with self.db.session() as s:
                        job_store.release(s, run.job_id, owner)
                except Exception:
                    log.warning("could not release %s", run.job_id, exc_info=True)
        self.runs.clear()
        self.db.dispose()
