"""Request rate and latency per deployment, by minute, for the console's charts, read from the one place
that records a request a deployment answered: the telemetry recorder (aiaas/core/telemetry.py).

The recorder keeps, per deployment id, a cumulative histogram of inference time with log-spaced
buckets 25% apart (`aiaas_deployment_latency_fine_seconds`, not exported: /metrics keeps its usual
buckets), so a percentile read back is within about 12% of the measured one. Here a ring of minutes
holds what each minute added: at every minute boundary (`tick`, from a thread, or from a read that
finds the minute changed) the cumulative histograms are read and the difference from the last boundary
is kept, for the deployments that answered in that minute only. The minute in progress is the
difference between now and the last boundary.

With several API processes (`aiaas serve --workers N`, a shared metrics directory), the cumulative
histograms are those of every process, summed from the directory's files (each at most
`metrics_flush_seconds` old; this process's own numbers are read live), so any process draws the
same charts. A process's history starts when it does.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from aiaas.core.telemetry import FAMILIES, FINE_LATENCY, Recorder, SharedDirectory, Snapshot

MINUTES = 60
EDGES = tuple(b * 1000 for b in FAMILIES[FINE_LATENCY].buckets)  # ms: 0.25 ms .. ~130 s; above: the last bucket
TICK_LATE_S = 0.05  # the thread reads a boundary this long after it, so the clock has surely passed it


def _bucket_ms(i: int) -> float:
    """A bucket's representative latency: the geometric middle of its edges."""
    if i == 0:
        return EDGES[0]
    if i >= len(EDGES):
        return EDGES[-1]
    return math.sqrt(EDGES[i - 1] * EDGES[i])


def percentile(hist: np.ndarray, q: float) -> float | None:
    total = int(hist.sum())
    if not total:
        return None
    rank = max(1, math.ceil(q / 100 * total))
    return round(_bucket_ms(int(np.searchsorted(np.cumsum(hist), rank))), 3)


class DeploymentTraffic:
    """InferenceService.traffic: per-minute views of the recorder's per-deployment histograms.

    `recorder`: this process's (None: nothing is recorded, every series is empty). `share()` names the
    metrics directory every API process writes to (the same SharedDirectory as the process's Publisher,
    so that its own file is not counted besides its live numbers)."""

    def __init__(self, recorder: Recorder | None, clock: Callable[[], float] = time.time) -> None:
        self.recorder = recorder
        self.clock = clock
        self.shared: SharedDirectory | None = None
        self._lock = threading.Lock()  # ticks and reads of the ring
        self._minutes: deque[tuple[int, dict[str, np.ndarray]]] = deque(maxlen=MINUTES)
        self._forgotten: set[str] = set()
        self._last_minute, self._last = self._boundary_now()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading the recorder -----------------------------------------------------------------
    def share(self, shared: SharedDirectory | None) -> None:
        with self._lock:
            self.shared = shared
            self._last_minute, self._last = self._boundary_now()

    def _cumulative(self) -> dict[str, np.ndarray]:
        """deployment id -> bucket counts (no sum), every process's when the directory is shared."""
        if self.recorder is None:
            return {}
        hists = self.recorder.histograms(FINE_LATENCY)
        if self.shared is not None:  # this process's live numbers (not its file) and every other file
            own = Snapshot(histograms={(FINE_LATENCY, labels): h for labels, h in hists.items()})
            merged = self.shared.merged(own)
            hists = {labels: h for (name, labels), h in merged.histograms.items() if name == FINE_LATENCY}
        width = len(EDGES) + 1
        return {labels[0]: np.asarray(h[:width], dtype=np.int64) for labels, h in hists.items()
                if len(h) == width + 1}

    def _boundary_now(self) -> tuple[int, dict[str, np.ndarray]]:
        return int(self.clock() // 60), self._cumulative()

    # -- the ring of minutes ------------------------------------------------------------------
    def tick(self) -> None:
        """At a minute boundary: keep what the minute(s) since the last boundary added (one entry, under
        the last minute of them when a boundary was missed)."""
        with self._lock:
            self._tick(*self._boundary_now())

    def _tick(self, minute: int, cumulative: dict[str, np.ndarray]) -> None:
        if minute <= self._last_minute:
            return
        added: dict[str, np.ndarray] = {}
        for dep, now in cumulative.items():
            before = self._last.get(dep)
            delta = now if before is None else np.maximum(now - before, 0)  # a file gone: never negative
            if delta.any() and dep not in self._forgotten:
                added[dep] = delta.astype(np.int32)
        if added:
            self._minutes.append((minute - 1, added))
        self._last_minute, self._last = minute, cumulative

    def forget(self, deployment_id: str) -> None:
        """A deleted deployment: its minutes go (its cumulative numbers stay in the recorder, as counters do)."""
        with self._lock:
            self._forgotten.add(deployment_id)
            for _, added in self._minutes:
                added.pop(deployment_id, None)

    def series(self, deployment_id: str) -> dict[str, Any]:
        """The last hour, oldest minute first: requests, p50 and p99 (ms, None without requests) per
        minute (the last one still running), and the hour's totals."""
        width = len(EDGES) + 1
        with self._lock:
            now_minute, cumulative = self._boundary_now()
            self._tick(now_minute, cumulative)
            minutes = list(range(now_minute - MINUTES + 1, now_minute + 1))
            hist = np.zeros((MINUTES, width), dtype=np.int64)
            first = minutes[0]
            for minute, added in self._minutes:
                h = added.get(deployment_id)
                if h is not None and minute >= first:
                    hist[minute - first] += h
            if deployment_id not in self._forgotten and deployment_id in cumulative:
                before = self._last.get(deployment_id)
                now = cumulative[deployment_id]
                hist[-1] += now if before is None else np.maximum(now - before, 0)
        counts = hist.sum(axis=1)
        return {
            "minutes": minutes,
            "requests": [int(n) for n in counts],
            "p50_ms": [percentile(h, 50) for h in hist],
            "p99_ms": [percentile(h, 99) for h in hist],
            "total": {"requests": int(counts.sum()), "p50_ms": percentile(hist.sum(axis=0), 50),
                      "p99_ms": percentile(hist.sum(axis=0), 99)},
        }

    # -- the minute thread ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None and self.recorder is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="traffic-minutes", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(60 - self.clock() % 60 + TICK_LATE_S):
            with contextlib.suppress(OSError):  # a directory read that failed: the next boundary has it
                self.tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
