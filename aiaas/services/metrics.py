"""What /metrics answers besides the per-request numbers (aiaas/core/telemetry.py):

* `runtime_source`: the model cache's counters and resident bytes, and the inference queue, of this
  process, read at snapshot time (nothing per request);
* `WorkQueueCollector`: fine-tuning jobs and batches by status, their leases, and the last heartbeat
  of each worker holding one, from the database (the same for every process: not summed);
* `metrics_registry` / `serve_metrics`: the registry /metrics renders, and the separate metrics port.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from aiaas.core.telemetry import Recorder, Sample, SharedDirectory, TelemetryCollector
from aiaas.serving.local import LocalRuntime
from aiaas.store.db import Database

logger = logging.getLogger(__name__)
_KIND = {"jobs": "job", "batches": "batch"}
_COUNTERS = ("hits", "misses", "loads", "load_failures", "evictions", "idle_unloads")


def runtime_source(runtime: LocalRuntime) -> Callable[[], list[Sample]]:
    """A telemetry source: the in-process model cache and inference queue (zeros before the first model)."""

    def samples() -> list[Sample]:
        cache = runtime._cache  # not created yet: a process that served nothing reports zeros
        stats = cache.stats() if cache is not None else {}
        out: list[Sample] = [(f"aiaas_model_cache_{n}", (), float(stats.get(n, 0))) for n in _COUNTERS]
        out.append(("aiaas_model_cache_resident_bytes", (), float(stats.get("memory_bytes", 0))))
        out.append(("aiaas_model_cache_models", (), float(len(stats.get("models", {})))))
        queued = running = 0.0
        for _predictor, batcher in list(runtime._batchers.values()):
            b = batcher.stats()
            queued += b["queued_items"]
            running += b["running_batches"]
        out += [("aiaas_inference_queue_depth", (), queued), ("aiaas_inference_running_batches", (), running)]
        return out

    return samples


class WorkQueueCollector:
    """Jobs and batches by status; their leases (live: the worker's heartbeat renews it; expired: it
    stopped beating); and per worker holding a lease, when it last beat. Read from the database in a
    background thread at most every `refresh_s`: a scrape answers the last snapshot and never waits on
    the database. `close()` (at shutdown) waits for a refresh in flight, so no connection outlives it."""

    def __init__(self, db: Database, *, lease_seconds: float = 30.0, refresh_s: float = 10.0) -> None:
        self.db = db
        self.lease_seconds = lease_seconds
        self.refresh_s = refresh_s
        self._snapshot: dict[str, Any] | None = None
        self._taken_at = float("-inf")
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def describe(self) -> list[Any]:
        return []

    def refresh(self) -> None:
        """Blocking: two grouped counts and the leases held."""
        from sqlalchemy import func, select

        from aiaas.store.models import Batch, FineTuningJob

        try:
            snap: dict[str, Any] = {}
            with self.db.session() as s:
                for kind, table in (("jobs", FineTuningJob), ("batches", Batch)):
                    rows = s.execute(select(table.status, func.count()).group_by(table.status)).all()
                    snap[kind] = {str(k): int(v) for k, v in rows}
                    held = select(table.lease_owner, table.lease_expires_at).where(table.lease_owner.is_not(None))
                    snap[f"{kind}_leases"] = [(str(o), float(e or 0.0)) for o, e in s.execute(held).all()]
            snap["at"] = time.time()
            self._snapshot = snap
            self._taken_at = time.monotonic()
        except Exception:  # noqa: BLE001 - metrics must not fail a scrape; the next one retries
            logger.warning("could not count jobs and batches for /metrics", exc_info=True)
        finally:
            with self._lock:
                self._thread = None

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def collect(self) -> Iterator[Any]:
        thread = None
        with self._lock:
            stale = time.monotonic() - self._taken_at > self.refresh_s
            if stale and self._thread is None and not self._closed:
                thread = self._thread = threading.Thread(target=self.refresh, name="work-metrics", daemon=True)
        if thread is not None:
            thread.start()
        if self._snapshot is not None:
            yield from self._families(self._snapshot)

    def _families(self, snap: dict[str, Any]) -> Iterator[Any]:
        jobs = GaugeMetricFamily("aiaas_jobs", "Fine-tuning jobs by status", labels=["status"])
        batches = GaugeMetricFamily("aiaas_batches", "Batches by status", labels=["status"])
        for family, kind in ((jobs, "jobs"), (batches, "batches")):
            for status, n in sorted(snap[kind].items()):
                family.add_metric([status], n)
        job_leases = GaugeMetricFamily("aiaas_job_leases", "Leases of running jobs: live (the worker's heartbeat "
                                       "renews it) or expired (the worker stopped)", labels=["state"])
        batch_leases = GaugeMetricFamily("aiaas_batch_leases", "Leases of running batches: live or expired",
                                         labels=["state"])
        beats = GaugeMetricFamily("aiaas_worker_heartbeat_timestamp_seconds",
                                  "When each worker holding a lease last renewed it (unix seconds)",
                                  labels=["worker", "kind"])
        for family, kind in ((job_leases, "jobs"), (batch_leases, "batches")):
            held = snap[f"{kind}_leases"]
            live = sum(1 for _, expires in held if expires >= snap["at"])
            family.add_metric(["live"], live)
            family.add_metric(["expired"], len(held) - live)
            for owner, expires in held:
                beats.add_metric([owner, _KIND[kind]], expires - self.lease_seconds)
        yield from (jobs, batches, job_leases, batch_leases, beats)


def metrics_registry(recorder: Recorder | None, shared: SharedDirectory | None,
                     work: WorkQueueCollector) -> CollectorRegistry:
    """The registry /metrics renders: this process's numbers, or every process's when they share a directory.
    `shared` must be the object this process publishes through (its `own` file is then read from `recorder`,
    not counted a second time)."""
    registry = CollectorRegistry()
    registry.register(TelemetryCollector(recorder, shared))
    registry.register(work)
    return registry


class MetricsServer:
    """The separate metrics port (AIAAS_METRICS_PORT), run by `aiaas serve` itself: it sums the files
    every API process writes into the shared directory, and counts jobs and batches from the database."""

    def __init__(self, host: str, port: int, shared_dir: Path, db: Database, *, lease_seconds: float) -> None:
        from prometheus_client import start_http_server

        self.db = db
        self.work = WorkQueueCollector(db, lease_seconds=lease_seconds)
        self.server, self.thread = start_http_server(port, addr=host,
                                                     registry=metrics_registry(None, SharedDirectory(shared_dir), self.work))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        self.work.close()
        self.db.dispose()
