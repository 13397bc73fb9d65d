"""Request rate and latency per deployment, by minute, in memory (this process), for the console's charts.

Why in memory: a database write per request would cost more than the model. Why not the drift monitor's
minutes: those start afresh whenever the answering model changes, which a traffic split does on every
other request. `record` (one call per request a deployment answers) adds one to that minute's count and
to one bucket of a log-spaced latency histogram (buckets 25% apart, so a percentile read back is within
about 12% of the measured one); `series` reads the last hour back with p50 and p99 per minute.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

import numpy as np

MINUTES = 60
FIRST_EDGE_MS = 0.25
RATIO = 1.25
EDGES = tuple(FIRST_EDGE_MS * RATIO ** i for i in range(60))  # 0.25 ms .. ~130 s; above: the last bucket


class _Series:
    __slots__ = ("minute_of", "counts", "hist")

    def __init__(self) -> None:
        self.minute_of = np.full(MINUTES, -1, dtype=np.int64)
        self.counts = np.zeros(MINUTES, dtype=np.int32)
        self.hist = np.zeros((MINUTES, len(EDGES) + 1), dtype=np.int32)


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
    """InferenceService.traffic: counts per deployment id (a deleted deployment is forgotten)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}

    def record(self, deployment_id: str, latency_ms: float) -> None:
        """Count one answered request. Cheap: no I/O, two array increments under a lock."""
        minute = int(self.clock() // 60)
        bucket = bisect_right(EDGES, latency_ms)
        with self._lock:
            s = self._series.get(deployment_id)
            if s is None:
                s = self._series[deployment_id] = _Series()
            row = minute % MINUTES
            if s.minute_of[row] != minute:  # an hour-old minute (or none) gives way
                s.minute_of[row] = minute
                s.counts[row] = 0
                s.hist[row] = 0
            s.counts[row] += 1
            s.hist[row, bucket] += 1

    def forget(self, deployment_id: str) -> None:
        with self._lock:
            self._series.pop(deployment_id, None)

    def series(self, deployment_id: str) -> dict[str, Any]:
        """The last hour, oldest minute first: requests, p50 and p99 (ms, None without requests) per
        minute, and the hour's totals."""
        now_minute = int(self.clock() // 60)
        minutes = list(range(now_minute - MINUTES + 1, now_minute + 1))
        with self._lock:
            s = self._series.get(deployment_id)
            if s is None:
                counts = np.zeros(MINUTES, dtype=np.int64)
                hist = np.zeros((MINUTES, len(EDGES) + 1), dtype=np.int64)
            else:
                rows = [m % MINUTES for m in minutes]
                live = s.minute_of[rows] == np.asarray(minutes)
                counts = np.where(live, s.counts[rows], 0).astype(np.int64)
                hist = np.where(live[:, None], s.hist[rows], 0).astype(np.int64)
        return {
            "minutes": minutes,
            "requests": [int(n) for n in counts],
            "p50_ms": [percentile(h, 50) for h in hist],
            "p99_ms": [percentile(h, 99) for h in hist],
            "total": {"requests": int(counts.sum()), "p50_ms": percentile(hist.sum(axis=0), 50),
                      "p99_ms": percentile(hist.sum(axis=0), 99)},
        }
