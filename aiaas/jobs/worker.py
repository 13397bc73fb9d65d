"""A training worker: claim a job under a lease, run it, repeat. `aiaas worker` runs one."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid

from aiaas.core.extras import require_train
from aiaas.core.settings import Settings
from aiaas.jobs.batch_runner import YIELDED, BatchLease, BatchRunner
from aiaas.jobs.lease import Lease
from aiaas.jobs.runner import run_job
from aiaas.store import batches as batch_store
from aiaas.store import jobs as job_store
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.db import Database

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, settings: Settings, *, worker_id: str | None = None) -> None:
        require_train("A training worker")  # before claiming a job it could only fail
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.db = Database(settings.sqlalchemy_url)
        self.blobs = create_blob_store(settings.blobs_url, settings)
        self.stopping = threading.Event()
        self.current: Lease | None = None
        self.current_batch: BatchLease | None = None
        self.batches: BatchRunner | None = None  # built on the first batch (its own inference runtime)
        self._batch_first = False  # claims alternate: the oldest job, then the oldest batch, ...
        self.shutdown_deadline: float | None = None  # time.monotonic() of the hard exit, once stopping

    def install_signal_handlers(self, *, hard_exit_after: float | None = None) -> None:
        """SIGTERM/SIGINT: at the next training step, save a checkpoint there (time allowing), stop and
        release the lease. With `hard_exit_after`, a worker still running that many seconds later (a step
        that never ends) exits anyway; training skips the save when it could not finish before then."""

        def stop(signum: int, _frame: object) -> None:
            log.info("worker %s stopping (signal %s)", self.worker_id, signum)
            first = not self.stopping.is_set()
            if first and hard_exit_after is not None:
                self.shutdown_deadline = time.monotonic() + hard_exit_after
                timer = threading.Timer(hard_exit_after, self._hard_exit)
                timer.daemon = True
                timer.start()
            self.stopping.set()
            if self.current is not None:
                self._stop_lease(self.current)  # training saves a checkpoint, stops and releases the lease
            if self.current_batch is not None:
                self.current_batch.shutdown.set()  # a batch stops after its chunk

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def _stop_lease(self, lease: Lease) -> None:
        """Training saves a checkpoint at its current step (if the time left before the hard exit allows),
        stops, and the lease is released: the job resumes elsewhere at once, from that step."""
        lease.shutdown_deadline = self.shutdown_deadline
        lease.shutdown.set()

    def _hard_exit(self) -> None:
        """Still busy long after SIGTERM (loading a model, preparing a big file, exporting: no step to stop
        at): hand the lease back so the job resumes elsewhere now, then exit. Any write this process had
        in flight is rolled back with it, and the attempt counts as stopped, not as a death."""
        lease = self.current
        log.error("worker %s did not stop in time; releasing %s and exiting", self.worker_id,
                  lease.job_id if lease else "nothing")
        if lease is not None:
            releasing = threading.Thread(target=self._release, args=(lease,), daemon=True)
            releasing.start()
            releasing.join(timeout=3.0)
        os._exit(1)

    def _release(self, lease: Lease) -> None:
        try:
            with self.db.session() as s:
                job_store.release(s, lease.job_id, self.worker_id)
        except Exception:  # noqa: BLE001 - it then expires instead
            log.warning("could not release %s", lease.job_id, exc_info=True)

    def run_once(self) -> str | None:
        """Claim and run at most one job or batch, alternating which kind is tried first so neither
        starves the other; a long batch also hands the worker back at a chunk boundary when a job is
        waiting (BatchRunner._job_waiting). Returns its final status ("yielded" for a batch that did),
        or None when there was nothing to do."""
        self._batch_first = not self._batch_first
        order = (self.run_batch_once, self.run_job_once) if self._batch_first else (
            self.run_job_once, self.run_batch_once)
        for run in order:
            claimed, status = run()
            if claimed:
                return status
        return None

    def run_batch_once(self) -> tuple[bool, str | None]:
        """Claim the oldest claimable batch and run it: (whether one was claimed, its final status)."""
        with self.db.session() as s:
            candidates = batch_store.claimable(s)
        for batch_id in candidates:
            if self.stopping.is_set():
                return False, None
            with self.db.session() as s:
                attempt = batch_store.try_claim(s, batch_id, self.worker_id, self.settings.lease_seconds)
            if not attempt:
                continue
            log.info("worker %s claimed batch %s (attempt %s)", self.worker_id, batch_id, attempt)
            if self.batches is None:
                self.batches = BatchRunner(self.settings, self.db, self.blobs)
            lease = BatchLease(self.db, batch_id, self.worker_id, attempt, lease_s=self.settings.lease_seconds,
                               heartbeat_s=self.settings.heartbeat_seconds)
            self.current_batch = lease
            try:
                with lease:
                    status = self.batches.run(lease)
            finally:
                self.current_batch = None
            if status == YIELDED:  # a job is waiting: the next claim tries jobs first
                self._batch_first = True
            return True, status
        return False, None

    def run_job_once(self) -> tuple[bool, str | None]:
        """Claim the oldest claimable fine-tuning job and run it: (whether one was claimed, its status)."""
        with self.db.session() as s:
            candidates = job_store.claimable(s)
        for job_id in candidates:
            if self.stopping.is_set():
                return False, None
            with self.db.session() as s:
                attempt = job_store.try_claim(s, job_id, self.worker_id, self.settings.lease_seconds,
                                              max_attempts=self.settings.job_max_attempts)
            if not attempt:
                continue
            log.info("worker %s claimed %s (attempt %s)", self.worker_id, job_id, attempt)
            lease = Lease(self.db, job_id, self.worker_id, lease_s=self.settings.lease_seconds,
                          heartbeat_s=self.settings.heartbeat_seconds, attempt=attempt)
            self.current = lease
            try:
                with lease:
                    return True, run_job(lease, self.settings, self.blobs)
            finally:
                self.current = None
        return False, None

    def close(self) -> None:
        if self.batches is not None:
            self.batches.close()
        self.db.dispose()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_forever(self) -> None:
        log.info("worker %s started", self.worker_id)
        while not self.stopping.is_set():
            try:
                status = self.run_once()
            except Exception:  # noqa: BLE001 - e.g. the database restarting; try again shortly
                log.exception("worker loop error")
                status = None
            if status is None:
                self.stopping.wait(self.settings.poll_seconds)
        self.close()
