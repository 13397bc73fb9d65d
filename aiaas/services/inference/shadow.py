"""Shadow traffic: a deployment mirrors a share of its requests to a candidate version.

Callers only ever get the primary's answer: the mirror runs after the answer is computed, as a task
of its own that the request does not wait for, and a slow or failing candidate is only counted. Nor do
callers pay for it in latency: a mirror starts only on spare capacity (no caller's request running in
this process at that moment) and the candidate's batches run on one inference thread at most;
a sampled request that finds no spare capacity is counted as `dropped`, never queued. Per
deployment (in this process) it records how often the candidate's label agrees with the primary's,
how far its scores are (mean and max absolute difference, labels aligned by name) and both
latencies. `GET /v1/deployments/{name}/shadow` reads it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiaas.serving.interface import Outputs

log = logging.getLogger(__name__)
WINDOW = 2048  # latencies kept for the percentiles
MAX_PENDING = 64  # mirrored calls in flight at once; more are dropped (counted), never queued


@dataclass
class ShadowStats:
    candidate: str
    percent: int
    mirrored: int = 0
    compared: int = 0
    dropped: int = 0  # sampled, but not run: no spare capacity then
    errors: int = 0
    texts: int = 0
    agreements: int = 0
    delta_sum: float = 0.0
    delta_max: float = 0.0
    primary_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    candidate_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def public(self) -> dict[str, Any]:
        def pct(values: deque[float], q: float) -> float | None:
            return None if not values else round(float(np.percentile(list(values), q)), 3)

        return {
            "object": "deployment.shadow", "candidate": self.candidate, "percent": self.percent,
            "mirrored_requests": self.mirrored, "compared_requests": self.compared, "dropped": self.dropped,
            "errors": self.errors, "compared_texts": self.texts,
            "agreement_rate": None if not self.texts else self.agreements / self.texts,
            "mean_abs_score_delta": None if not self.texts else self.delta_sum / self.texts,
            "max_abs_score_delta": self.delta_max,
            "primary_latency_ms": {"p50": pct(self.primary_ms, 50), "p95": pct(self.primary_ms, 95)},
            "candidate_latency_ms": {"p50": pct(self.candidate_ms, 50), "p95": pct(self.candidate_ms, 95)},
        }


def compare(primary: Outputs, candidate: Outputs) -> tuple[int, list[float]]:
    """(texts whose top label agrees, per-text max |score difference| over the labels both share)."""
    p_labels, c_labels = list(primary.info.labels), list(candidate.info.labels)
    shared = [lab for lab in p_labels if lab in c_labels]
    agree, deltas = 0, []
    for p_row, c_row in zip(primary.rows, candidate.rows, strict=True):
        if p_labels and c_labels:
            agree += p_labels[int(np.argmax(p_row))] == c_labels[int(np.argmax(c_row))]
        if shared:
            p = np.array([p_row[p_labels.index(lab)] for lab in shared])
            c = np.array([c_row[c_labels.index(lab)] for lab in shared])
            deltas.append(float(np.abs(p - c).max()))
        else:
            deltas.append(float(np.abs(p_row - c_row).max()) if p_row.shape == c_row.shape else 1.0)
    return agree, deltas


class Shadows:
    def __init__(self, *, rng: random.Random | None = None) -> None:
        self._stats: dict[tuple[str, str], ShadowStats] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = rng or random.Random()  # nosec B311 - samples a share of traffic to mirror; not a secret

    def stats(self, org_id: str, deployment: str) -> ShadowStats | None:
        return self._stats.get((org_id, deployment))

    def maybe_mirror(self, org_id: str, deployment: str, candidate: str, percent: int, primary: Outputs,
                     primary_ms: float, run: Callable[[], Awaitable[Outputs]], *, spare: bool = True) -> None:
        """Mirror this request with probability percent/100 when `spare` (no caller's request is running)
        and no mirror of this deployment is in flight; returns at once."""
        key = (org_id, deployment)
        stats = self._stats.get(key)
        if stats is None or stats.candidate != candidate or stats.percent != percent:
            stats = self._stats[key] = ShadowStats(candidate, percent)  # a new candidate starts afresh
        stats.primary_ms.append(primary_ms)
        if self._rng.random() * 100 >= percent:
            return
        if not spare or len(self._tasks) >= MAX_PENDING:
            stats.dropped += 1
            return
        stats.mirrored += 1
        task = asyncio.get_running_loop().create_task(self._mirror(stats, primary, run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mirror(self, stats: ShadowStats, primary: Outputs, run: Callable[[], Awaitable[Outputs]]) -> None:
        t0 = time.perf_counter()
        try:
            out = await run()
        except Exception:  # noqa: BLE001 - the candidate failing is what shadowing is for: count it
            stats.errors += 1
            log.info("shadow candidate %s failed", stats.candidate, exc_info=True)
            return
        stats.candidate_ms.append((time.perf_counter() - t0) * 1000)
        agree, deltas = compare(primary, out)
        stats.compared += 1
        stats.texts += len(deltas)
        stats.agreements += agree
        stats.delta_sum += sum(deltas)
        stats.delta_max = max([stats.delta_max, *deltas])

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
