"""A job lease held by this worker: heartbeats in a thread, fenced writes, cancel and loss detection."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from aiaas.store import jobs as job_store
from aiaas.store.db import Database
from aiaas.store.models import FineTuningJob

log = logging.getLogger(__name__)
T = TypeVar("T")


class Lease:
    """Holds the lease on one job. Every write goes through `write()`, which fences it."""

    def __init__(self, db: Database, job_id: str, worker_id: str, *, lease_s: float, heartbeat_s: float,
                 attempt: int | None = None) -> None:
        self.db = db
        self.job_id = job_id
        self.worker_id = worker_id
        self.attempt = attempt  # the claim's number (fence token); None: fenced by owner only
        self.refused = 0  # writes dropped because the lease was lost
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.lost = threading.Event()
        self.cancelled = threading.Event()
        self.shutdown = threading.Event()  # the worker itself is stopping (SIGTERM)
        self.shutdown_deadline: float | None = None  # time.monotonic() it exits by, once shutting down
        self._stop_heartbeat = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_heartbeat.set()
        self._thread.join(timeout=self.heartbeat_s * 2)
        if self.refused:
            log.warning("job %s attempt %s: %d writes refused after the lease was lost", self.job_id, self.attempt,
                        self.refused)
        if not self.lost.is_set():
            try:
                with self.db.session() as s:
                    job_store.release(s, self.job_id, self.worker_id)
            except Exception:  # noqa: BLE001 - the lease simply expires instead
                log.warning("could not release lease on %s", self.job_id, exc_info=True)

    @property
    def should_stop(self) -> bool:
        return self.lost.is_set() or self.cancelled.is_set() or self.shutdown.is_set()

    def write(self, fn: Callable[[Any, FineTuningJob], T]) -> T | None:
        """Run `fn(session, job)` in a transaction that first proves we still hold the lease.

        Returns None (and marks the lease lost) when another worker holds it: a stale
        worker's writes are dropped, never applied.
        """
        if self.lost.is_set():
            self.refused += 1
            return None
        try:
            with self.db.session() as s:
                job = job_store.fence(s, self.job_id, self.worker_id, self.lease_s, self.attempt)
                if job.cancel_requested:
                    self.cancelled.set()
                return fn(s, job)
        except job_store.LeaseLost:
            log.warning("lease on %s (attempt %s) lost; this worker stops writing to it", self.job_id, self.attempt)
            self.lost.set()
            self.refused += 1
            return None

    def _beat(self) -> None:
        while not self._stop_heartbeat.wait(self.heartbeat_s):
            try:
                self.write(lambda s, job: None)
            except Exception:  # noqa: BLE001 - a transient DB error; the next beat retries
                log.warning("heartbeat failed for %s", self.job_id, exc_info=True)
            if self.lost.is_set():
                return
