"""The local worker pool started by `aiaas serve`: N `aiaas worker` processes, restarted if they die."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

from aiaas.core.cpu import usable_cores
from aiaas.core.extras import train_missing_message

log = logging.getLogger(__name__)


class WorkerPool:
    def __init__(self, size: int) -> None:
        self.size = size
        self.procs: list[subprocess.Popen] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="worker-pool", daemon=True)

    def _spawn(self) -> subprocess.Popen:
        env = dict(os.environ)
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

    def _supervise(self) -> None:
        while not self._stop.wait(2.0):
            for i, p in enumerate(self.procs):
                if p.poll() is not None and not self._stop.is_set():
                    log.warning("training worker %s exited with %s; restarting", p.pid, p.returncode)
                    self.procs[i] = self._spawn()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
