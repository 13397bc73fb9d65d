"""Prometheus metrics that are cheap on the hot path and correct across several API processes.

Why not prometheus_client's own metric objects: each `inc`/`observe` there is a locked write of a Python
float (multiprocess mode: a write into an mmap file per value, measured 9 µs per counter and 17 µs per
histogram observation on this project's 2-core machine), and several per request add up to more than the
monitoring hook. Here a request adds plain numbers to dictionaries under one lock (`Recorder`), and:

* in one process, `/metrics` reads the recorder directly;
* with several processes (`aiaas serve --workers N`, or a separate metrics port), every process writes
  its cumulative numbers as one JSON file into a shared directory (`AIAAS_METRICS_DIR`, which `aiaas
  serve` creates afresh) every `flush_seconds` and at shutdown, and a scrape, in whichever process,
  sums the files: counters and histograms of every process that ever wrote one (a process that exited
  keeps counting in the total, as in prometheus_client's multiprocess mode), gauges of the processes
  still alive only.

Values held elsewhere (the model cache's counters, the inference queue) are read at snapshot time from
`sources`, never counted per request. Every metric is declared once, in `FAMILIES`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

Kind = Literal["counter", "gauge", "histogram"]
Labels = tuple[str, ...]
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# The console's charts (services/inference/traffic.py): 25% apart from 0.25 ms, so a percentile read back
# is within about 12%; per deployment id, not on /metrics (60 buckets per series would swamp a scrape).
FINE_LATENCY = "aiaas_deployment_latency_fine_seconds"
FINE_LATENCY_BUCKETS = tuple(0.00025 * 1.25 ** i for i in range(60))


@dataclass(frozen=True)
class Family:
    name: str  # counters without `_total` (the exposition adds it)
    kind: Kind
    help: str
    labels: Labels = ()
    buckets: tuple[float, ...] = ()
    merge: Literal["sum", "max"] = "sum"  # gauges across live processes
    exported: bool = True  # False: kept, merged across processes, but not on /metrics


_DEP = ("deployment", "model")  # model: the version's model id (each version has its own)
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("aiaas_http_requests", "counter", "HTTP requests", ("method", "route", "status")),
    Family("aiaas_http_request_duration_seconds", "histogram", "HTTP request latency", ("method", "route"),
           LATENCY_BUCKETS),
    Family("aiaas_deployment_requests", "counter", "Inference requests per deployment and model version", _DEP),
    Family("aiaas_deployment_texts", "counter", "Texts scored per deployment", _DEP),
    Family("aiaas_deployment_tokens", "counter", "Input tokens per deployment", _DEP),
    Family("aiaas_deployment_unknown_tokens", "counter", "Input tokens the tokenizer did not know ([UNK])", _DEP),
    Family("aiaas_deployment_request_duration_seconds", "histogram",
           "Inference time per request (model lookup, queue, model), per deployment", _DEP, LATENCY_BUCKETS),
    Family(FINE_LATENCY, "histogram", "Inference time per request, per deployment id (the console's charts)",
           ("deployment_id",), FINE_LATENCY_BUCKETS, exported=False),
    Family("aiaas_deployment_request_texts", "histogram", "Texts per inference request (its batch size)", _DEP,
           SIZE_BUCKETS),
    Family("aiaas_deployment_drift", "gauge", "1 while a feature is flagged as drifted", (*_DEP, "feature"),
           merge="max"),
    Family("aiaas_inference_batch_size", "histogram", "Texts per batch the inference threads ran", ("kind",),
           SIZE_BUCKETS),
    Family("aiaas_inference_queue_depth", "gauge", "Texts waiting for an inference thread"),
    Family("aiaas_inference_running_batches", "gauge", "Batches on the inference threads now"),
    *(Family(f"aiaas_model_cache_{n}", "counter", f"Model cache {n.replace('_', ' ')}")
      for n in ("hits", "misses", "loads", "load_failures", "evictions", "idle_unloads")),
    Family("aiaas_model_cache_resident_bytes", "gauge", "Bytes of the models loaded now"),
    Family("aiaas_model_cache_models", "gauge", "Models loaded now"),
    Family("aiaas_api_processes", "gauge", "API processes alive (each counts 1)"),
)}

Sample = tuple[str, Labels, float]  # (family name, label values, value) from a source
Source = Callable[[], Iterable[Sample]]


@dataclass
class Snapshot:
    """Cumulative numbers of one process (or, merged, of all)."""

    counters: dict[tuple[str, Labels], float] = field(default_factory=dict)
    gauges: dict[tuple[str, Labels], float] = field(default_factory=dict)
    histograms: dict[tuple[str, Labels], list[float]] = field(default_factory=dict)  # bucket counts..., sum

    def to_json(self) -> dict[str, Any]:
        return {kind: [[name, list(labels), value] for (name, labels), value in getattr(self, kind).items()]
                for kind in ("counters", "gauges", "histograms")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        snap = cls()
        for kind in ("counters", "gauges", "histograms"):
            target = getattr(snap, kind)
            for name, labels, value in data.get(kind, []):
                if name in FAMILIES:  # a file from another version may name metrics this one lacks
                    target[(name, tuple(labels))] = value
        return snap

    def add(self, other: Snapshot, *, gauges: bool) -> None:
        for key, v in other.counters.items():
            self.counters[key] = self.counters.get(key, 0.0) + v
        for key, h in other.histograms.items():
            mine = self.histograms.get(key)
            if mine is None or len(mine) != len(h):
                self.histograms[key] = list(h) if mine is None else mine
            else:
                self.histograms[key] = [a + b for a, b in zip(mine, h, strict=True)]
        if gauges:
            for key, v in other.gauges.items():
                merge = FAMILIES[key[0]].merge
                old = self.gauges.get(key)
                self.gauges[key] = v if old is None else (old + v if merge == "sum" else max(old, v))


class Recorder:
    """One per API process (per app). `inc`, `observe` and the two request helpers are the hot path:
    dictionary updates under one lock, no I/O."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, Labels], float] = {}
        self._histograms: dict[tuple[str, Labels], list[float]] = {}
        self.sources: list[Source] = []

    def inc(self, name: str, labels: Labels = (), amount: float = 1.0) -> None:
        key = (name, labels)
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + amount

    def observe(self, name: str, labels: Labels, value: float) -> None:
        with self._lock:
            self._observe(name, labels, value)

    def _observe(self, name: str, labels: Labels, value: float) -> None:
        key = (name, labels)
        h = self._histograms.get(key)
        buckets = FAMILIES[name].buckets
        if h is None:
            h = self._histograms[key] = [0.0] * (len(buckets) + 2)  # each bucket, +Inf, the sum
        h[bisect_left(buckets, value)] += 1
        h[-1] += value

    def http(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request (the edge middleware)."""
        key = ("aiaas_http_requests", (method, route, str(status)))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + 1
            self._observe("aiaas_http_request_duration_seconds", (method, route), seconds)

    def inference(self, deployment: str, model: str, seconds: float, texts: int, tokens: int,
                  unknown: int | None, deployment_id: str | None = None) -> None:
        """One inference request to a deployment (deployment "" for a model called by its id); with its
        `deployment_id`, also the fine latency histogram the console's charts read."""
        labels = (deployment, model)
        c = self._counters
        with self._lock:
            for name, amount in (("aiaas_deployment_requests", 1), ("aiaas_deployment_texts", texts),
                                 ("aiaas_deployment_tokens", tokens),
                                 ("aiaas_deployment_unknown_tokens", unknown or 0)):
                key = (name, labels)
                c[key] = c.get(key, 0.0) + amount
            self._observe("aiaas_deployment_request_duration_seconds", labels, seconds)
            self._observe("aiaas_deployment_request_texts", labels, texts)
            if deployment_id is not None:
                self._observe(FINE_LATENCY, (deployment_id,), seconds)

    def histograms(self, name: str) -> dict[Labels, list[float]]:
        """A copy of one histogram family's series (bucket counts..., sum), without a whole snapshot."""
        with self._lock:
            return {labels: list(h) for (n, labels), h in self._histograms.items() if n == name}

    def snapshot(self) -> Snapshot:
        with self._lock:
            snap = Snapshot(dict(self._counters), {}, {k: list(v) for k, v in self._histograms.items()})
        snap.gauges[("aiaas_api_processes", ())] = 1.0
        for source in self.sources:
            try:
                samples = list(source())
            except Exception:  # noqa: BLE001 - one broken source must not fail a scrape
                log.warning("a metrics source failed", exc_info=True)
                continue
            for name, labels, value in samples:
                kind = FAMILIES[name].kind
                target = snap.counters if kind == "counter" else snap.gauges
                target[(name, labels)] = target.get((name, labels), 0.0) + value
        return snap


class SharedDirectory:
    """The files of every process that shares one metrics directory; this process's is `own`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.own = directory / f"{os.getpid()}-{secrets.token_hex(4)}.json"

    def write(self, snap: Snapshot) -> None:
        """Atomically replace this process's file."""
        tmp = self.own.with_suffix(".tmp")
        tmp.write_text(json.dumps(snap.to_json()))
        os.replace(tmp, self.own)

    def merged(self, own: Snapshot | None = None) -> Snapshot:
        """Every file summed (this process's from `own` when given: fresher than its file)."""
        total = Snapshot()
        if own is not None:
            total.add(own, gauges=True)
        for path in sorted(self.directory.glob("*.json")):
            if own is not None and path == self.own:
                continue
            try:
                snap = Snapshot.from_json(json.loads(path.read_text()))
            except (OSError, ValueError):  # replaced or removed while read: the next scrape has it
                continue
            total.add(snap, gauges=_alive(path.name.split("-", 1)[0]))
        return total


def _alive(pid_text: str) -> bool:
    try:
        os.kill(int(pid_text), 0)
    except ValueError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class Publisher:
    """Writes a recorder's snapshot into the shared directory every `flush_seconds` (a thread; the
    event loop never touches the file) and once more at `stop()`."""

    def __init__(self, recorder: Recorder, shared: SharedDirectory, flush_seconds: float) -> None:
        self.recorder, self.shared, self.flush_seconds = recorder, shared, flush_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="metrics-publisher", daemon=True)
            self._thread.start()

    def flush(self) -> None:
        try:
            self.shared.write(self.recorder.snapshot())
        except OSError:
            log.warning("could not write metrics to %s", self.shared.directory, exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()


def families(snap: Snapshot) -> Iterator[Any]:
    """The snapshot as prometheus_client metric families (every declared family, samples or none)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    by_family: dict[str, list[tuple[Labels, Any]]] = {}
    for table in (snap.counters, snap.gauges, snap.histograms):
        for (name, values), value in table.items():
            by_family.setdefault(name, []).append((values, value))
    for fam in FAMILIES.values():
        if not fam.exported:
            continue
        labels = list(fam.labels)
        out: Any
        if fam.kind == "counter":
            out = CounterMetricFamily(fam.name, fam.help, labels=labels)
        elif fam.kind == "gauge":
            out = GaugeMetricFamily(fam.name, fam.help, labels=labels)
        else:
            out = HistogramMetricFamily(fam.name, fam.help, labels=labels)
        for values, value in sorted(by_family.get(fam.name, []), key=lambda kv: kv[0]):
            if len(values) != len(labels):
                continue
            if fam.kind == "histogram":
                running, cumulative = 0.0, []
                for le, n in zip([*map(_le, fam.buckets), "+Inf"], value[:-1], strict=True):
                    running += n
                    cumulative.append((le, running))
                out.add_metric(list(values), cumulative, value[-1])
            else:
                out.add_metric(list(values), value)
        yield out


def _le(bound: float) -> str:
    return repr(float(bound))


class TelemetryCollector:
    """A prometheus_client collector over a recorder (this process), the shared directory (every process),
    or both. Register with `registry.register(...)`."""

    def __init__(self, recorder: Recorder | None, shared: SharedDirectory | None) -> None:
        if recorder is None and shared is None:
            raise ValueError("a TelemetryCollector needs a recorder, a shared directory or both")
        self.recorder, self.shared = recorder, shared

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        own = self.recorder.snapshot() if self.recorder is not None else None
        if self.shared is None:
            assert own is not None
            yield from families(own)
            return
        if own is not None:
            with contextlib.suppress(OSError):
                self.shared.write(own)  # other scrapers see this process as fresh as this one does
        yield from families(self.shared.merged(own))

