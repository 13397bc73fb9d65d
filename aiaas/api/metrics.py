"""Prometheus collectors read at scrape time (nothing added per request): the model cache of this process,
and jobs by status with their workers' leases."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from aiaas.serving.local import LocalRuntime

logger = logging.getLogger(__name__)
_COUNTERS = ("hits", "misses", "loads", "load_failures", "evictions", "idle_unloads")


class ModelCacheCollector:
    """Hits, misses, loads, evictions and resident bytes of the in-process model cache."""

    def __init__(self, runtime: LocalRuntime) -> None:
        self.runtime = runtime

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        cache = self.runtime._cache  # not created yet: a process that served nothing reports zeros
        stats = cache.stats() if cache is not None else {}
        for name in _COUNTERS:
            yield CounterMetricFamily(f"aiaas_model_cache_{name}", f"Model cache {name.replace('_', ' ')}",
                                      value=stats.get(name, 0))
        yield GaugeMetricFamily("aiaas_model_cache_resident_bytes", "Bytes of the models loaded now",
                                value=stats.get("memory_bytes", 0))
        yield GaugeMetricFamily("aiaas_model_cache_models", "Models loaded now", value=len(stats.get("models", {})))


class JobsCollector:
    """Fine-tuning jobs by status, and leases of running jobs (live: the worker's heartbeat renews it;
    expired: the worker stopped beating). Read from the database in a background thread at most every
    `refresh_s`; a scrape answers the last snapshot and never waits on the database."""

    def __init__(self, db: Any, *, refresh_s: float = 10.0) -> None:
        self.db = db
        self.refresh_s = refresh_s
        self._snapshot: tuple[dict[str, int], int, int] | None = None
        self._taken_at = float("-inf")
        self._lock = threading.Lock()
        self._refreshing = False

    def describe(self) -> list[Any]:
        return []

    def refresh(self) -> None:
        """Blocking: one grouped count and one lease count."""
        from sqlalchemy import func, select

        from aiaas.store.models import FineTuningJob

        try:
            with self.db.session() as s:
                counts = select(FineTuningJob.status, func.count()).group_by(FineTuningJob.status)
                by_status = dict(s.execute(counts).all())
                now = time.time()
                running = FineTuningJob.lease_owner.is_not(None)
                live = s.scalar(select(func.count()).where(running, FineTuningJob.lease_expires_at >= now)) or 0
                expired = s.scalar(select(func.count()).where(running, FineTuningJob.lease_expires_at < now)) or 0
            self._snapshot = ({str(k): int(v) for k, v in by_status.items()}, int(live), int(expired))
            self._taken_at = time.monotonic()
        except Exception:  # noqa: BLE001 - metrics must not fail a scrape; the next one retries
            logger.warning("could not count jobs for /metrics", exc_info=True)
        finally:
            with self._lock:
                self._refreshing = False

    def collect(self) -> Iterator[Any]:
        with self._lock:
            stale = time.monotonic() - self._taken_at > self.refresh_s and not self._refreshing
            if stale:
                self._refreshing = True
        if stale:
            threading.Thread(target=self.refresh, name="jobs-metrics", daemon=True).start()
        if self._snapshot is None:
            return
        by_status, live, expired = self._snapshot
        jobs = GaugeMetricFamily("aiaas_jobs", "Fine-tuning jobs by status", labels=["status"])
        for status, n in sorted(by_status.items()):
            jobs.add_metric([status], n)
        leases = GaugeMetricFamily("aiaas_job_leases", "Leases of running jobs: live (the worker's heartbeat "
                                   "renews it) or expired (the worker stopped)", labels=["state"])
        leases.add_metric(["live"], live)
        leases.add_metric(["expired"], expired)
        yield from (jobs, leases)
