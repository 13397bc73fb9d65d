"""The local worker pool started by `aiaas serve`: N `aiaas worker` processes, restarted if they die.

The workers end with the pool's process however it ends: each is told our pid (AIAAS_PARENT_PID) and
arms the parent-death signal (aiaas/jobs/lifetime.py), so even a SIGKILL of `aiaas serve` stops them;
a clean stop sends SIGTERM (stop at the next step, release the lease) and kills what is left after
the grace period. A worker that dies while holding a job has its lease expired at once with the
reason (exit code or signal), so the job resumes on another worker without waiting out the lease.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

from aiaas.core.cpu import usable_cores
from aiaas.core.extras import train_missing_message
from aiaas.jobs.lifetime import child_env

if TYPE_CHECKING:
    from aiaas.core.settings import Settings

log = logging.getLogger(__name__)


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {returncode}"


class WorkerPool:
    def __init__(self, size: int, settings: Settings | None = None) -> None:
        self.size = size
        self.settings = settings  # where to record why a worker died; None: only log it
        self.procs: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stop_started: float | None = None
        self._thread = threading.Thread(target=self._supervise, name="worker-pool", daemon=True)

    def _spawn(self) -> subprocess.Popen:
        env = child_env()
        cores = usable_cores()
        # Share the cores between workers instead of letting each spin up every core.
        env.setdefault("AIAAS_TRAINING_THREADS", str(max(1, cores // self.size)))
        return subprocess.Popen([sys.executable, "-m", "aiaas.cli.main", "worker"], env=env)

    def start(self) -> None:
        why_not = train_missing_message(f"Starting {self.size} training worker(s)")
        if why_not:  # an API-only install: serve, and say once why jobs stay queued here
            log.warning("%s Jobs wait for a worker started elsewhere.", why_not)
            return
        self.procs = [self._spawn() for _ in range(self.size)]
        self._thread.start()

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def _supervise(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                for i, p in enumerate(self.procs):
                    if p.poll() is not None and not self._stop.is_set():
                        reason = exit_reason(p.returncode)
                        log.warning("training worker %s %s; restarting", p.pid, reason)
                        self._record_exit(p.pid, reason)
                        self.procs[i] = self._spawn()

    def _record_exit(self, pid: int, reason: str) -> None:
        if self.settings is None:
            return
        from aiaas.store import jobs as job_store
        from aiaas.store.db import Database

        db = Database(self.settings.sqlalchemy_url)
        try:
            with db.session() as s:
                # Worker ids are "<host>:<pid>:<random>" (aiaas/jobs/worker.py).
                jobs = job_store.record_worker_exit(s, f"{socket.gethostname()}:{pid}:", reason)
            if jobs:
                log.warning("worker %s held %s; their leases are expired for another attempt", pid, jobs)
        except Exception:  # the lease then simply expires
            log.warning("could not record the exit of worker %s", pid, exc_info=True)
        finally:
            db.dispose()

    def begin_stop(self) -> None:
        """Tell every worker to stop (SIGTERM: they stop at the next step and release their leases); no wait."""
        if self._stop_started is None:
            self._stop_started = time.monotonic()
        self._stop.set()
        with self._lock:
            for p in self.procs:
                if p.poll() is None:
                    p.terminate()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers; kill those still running `timeout` seconds after they were first told."""
        self.begin_stop()
        assert self._stop_started is not None
        deadline = self._stop_started + timeout
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("training worker %s did not stop in %.0f s; killing it", p.pid, timeout)
                p.kill()
                p.wait()
