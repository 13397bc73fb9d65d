"""Experiment tracking for a job's `integrations`: metrics, parameters and the model card sent off the hot path.

The training loop reports through its callbacks; `TrackingCallbacks` passes every call on to the job's own
callbacks and, for metrics, only appends to a queue. A background thread owns the sinks (the MLflow client,
in aiaas/jobs/mlflow_tracker.py): it sends what the queue holds in batches, at the latest every
FLUSH_SECONDS and at once at an evaluation point (a validation record). A sink that fails never fails the
job: the failure becomes a warning event on the job (written by the training thread, at its next report)
and the sink is dropped after MAX_FAILURES in a row.

A sink is anything with the `Sink` methods below; a W&B sink would be one more class (README: Integrations).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from typing import Any, Protocol

log = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0
MAX_BATCH = 500  # metric points per call to a sink
MAX_QUEUED = 20_000  # points waiting; more are dropped (and said so) rather than held without bound
MAX_FAILURES = 3
CLOSE_SECONDS = 30.0  # what a job waits at its end for the last points to leave
Point = tuple[str, float, int]  # metric name, value, step


class Sink(Protocol):
    """One tracking backend; every method runs in the tracker's thread, never in the training loop."""

    name: str

    def open(self, params: dict[str, str]) -> None: ...
    def log_metrics(self, points: list[Point]) -> None: ...
    def log_params(self, params: dict[str, str]) -> None: ...
    def log_text(self, artifact_path: str, text: str) -> None: ...
    def close(self, status: str) -> None: ...


def metric_points(record: dict[str, Any], fallback_step: int) -> list[Point]:
    """A metrics event's numbers, named by split: `train/loss` per logged step, `validation/accuracy` per epoch."""
    split = record.get("split") or "train"
    step = record.get("step")
    step = int(step) if isinstance(step, int | float) else fallback_step
    skip = {"step", "split", "total_steps"}
    return [(f"{split}/{k}", float(v), step) for k, v in record.items()
            if k not in skip and isinstance(v, int | float) and not isinstance(v, bool)]


def flat_params(prefix: str, values: dict[str, Any]) -> dict[str, str]:
    """Scalar values as MLflow-style string parameters (nested ones and None left out)."""
    return {f"{prefix}{k}": str(v)[:500] for k, v in values.items()
            if v is not None and isinstance(v, str | int | float | bool)}


class Tracker:
    """The job attempt's sinks behind one queue and one thread."""

    def __init__(self, sinks: list[Sink], params: dict[str, str]) -> None:
        self.sinks = list(sinks)
        self.failures = {s.name: 0 for s in self.sinks}
        self.warnings: deque[str] = deque()
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=MAX_QUEUED)
        self.dropped = 0
        self.counter = 0
        self.closed = False
        self.thread = threading.Thread(target=self._run, args=(params,), name="aiaas-tracking", daemon=True)
        self.thread.start()

    # ---- the training thread's side: cheap, never blocking ----

    def metrics(self, record: dict[str, Any]) -> None:
        self.counter += 1
        self._put("metrics", (metric_points(record, self.counter), record.get("split") == "validation"))

    def params(self, params: dict[str, str]) -> None:
        self._put("params", params)

    def text(self, artifact_path: str, text: str) -> None:
        self._put("text", (artifact_path, text))

    def _put(self, kind: str, item: Any) -> None:
        try:
            self.queue.put_nowait((kind, item))
        except queue.Full:
            self.dropped += 1

    def pop_warnings(self) -> list[str]:
        out = []
        while self.warnings:
            out.append(self.warnings.popleft())
        return out

    def close(self, status: str, timeout: float = CLOSE_SECONDS) -> list[str]:
        """Send what is left and end the runs with `status` (FINISHED, FAILED, KILLED); the warnings to report."""
        if not self.closed:
            self.closed = True
            self.queue.put(("close", status))
            self.thread.join(timeout)
            if self.thread.is_alive():
                self.warnings.append(f"Tracking: the last data did not reach {self._names()} within "
                                     f"{timeout:.0f} s; the job goes on without it.")
        if self.dropped:
            self.warnings.append(f"Tracking: {self.dropped} reports were dropped (the tracking store was too slow).")
            self.dropped = 0
        return self.pop_warnings()

    def _names(self) -> str:
        return ", ".join(s.name for s in self.sinks) or "the tracking store"

    # ---- the tracker thread ----

    def _run(self, params: dict[str, str]) -> None:
        for sink in list(self.sinks):
            self._call(sink, "open", params)
        buffer: list[Point] = []
        last_flush = time.monotonic()
        while True:
            try:
                kind, item = self.queue.get(timeout=FLUSH_SECONDS)
            except queue.Empty:
                kind, item = "tick", None
            if kind == "metrics":
                points, eval_point = item
                buffer.extend(points)
                if not (eval_point or len(buffer) >= MAX_BATCH or time.monotonic() - last_flush >= FLUSH_SECONDS):
                    continue
            elif kind in ("params", "text", "close"):
                self._flush(buffer)
            if kind == "params":
                self._each("log_params", item)
            elif kind == "text":
                self._each("log_text", *item)
            elif kind == "close":
                self._each("close", item)
                return
            self._flush(buffer)
            last_flush = time.monotonic()

    def _flush(self, buffer: list[Point]) -> None:
        while buffer:
            chunk = buffer[:MAX_BATCH]
            del buffer[:MAX_BATCH]
            self._each("log_metrics", chunk)

    def _each(self, method: str, *args: Any) -> None:
        for sink in list(self.sinks):
            self._call(sink, method, *args)

    def _call(self, sink: Sink, method: str, *args: Any) -> None:
        try:
            getattr(sink, method)(*args)
            self.failures[sink.name] = 0
        except Exception as exc:  # noqa: BLE001 - a tracking store's failure must never fail the job
            self.failures[sink.name] += 1
            log.warning("tracking sink %s: %s failed: %r", sink.name, method, exc)
            dropped = method == "open" or self.failures[sink.name] >= MAX_FAILURES
            if dropped:
                self.sinks.remove(sink)
            self.warnings.append(
                f"Tracking: {sink.name} {method} failed ({type(exc).__name__}: {str(exc)[:300]})"
                + ("; no more data goes there for this job." if dropped else "; trying again at the next batch."))


class TrackingCallbacks:
    """The job's callbacks, plus a copy of each metrics report (and the parameters) for the tracker."""

    def __init__(self, inner: Any, tracker: Tracker) -> None:
        self.inner = inner
        self.tracker = tracker

    def event(self, level: str, message: str, *, type: str = "message", data: dict | None = None) -> None:
        self.inner.event(level, message, type=type, data=data)
        if data:
            if type == "metrics":
                self.tracker.metrics(data)
            hp = data.get("hyperparameters")
            if isinstance(hp, dict):
                self.tracker.params(flat_params("hp.", hp))
        self.report_warnings()

    def report_warnings(self, warnings: list[str] | None = None) -> None:
        for message in warnings if warnings is not None else self.tracker.pop_warnings():
            self.inner.event("warning", message)

    def checkpoint(self, step: int, path: Any, metrics: dict) -> None:
        self.inner.checkpoint(step, path, metrics)

    def should_stop(self) -> bool:
        return bool(self.inner.should_stop())

    def seconds_to_save_before_stop(self) -> float | None:
        result: float | None = self.inner.seconds_to_save_before_stop()
        return result


def start_tracking(integrations: list[dict[str, Any]], params: dict[str, str], *, job_id: str,
                   attempt: int | None) -> Tracker | None:
    """A tracker for the job's stored integrations (None without any); raises `integration_unavailable`
    when this worker lacks what one of them needs, before any training."""
    if not integrations:
        return None
    from aiaas.core.errors import AiaasError
    from aiaas.core.extras import missing
    from aiaas.jobs.mlflow_tracker import EXTRA_MODULES, MlflowSink

    sinks: list[Sink] = []
    for i, item in enumerate(integrations):
        if item.get("type") != "mlflow":  # the API stores no other type; an older row might
            raise AiaasError(f"integrations[{i}] has type '{item.get('type')}', which this worker cannot send to.",
                             code="unsupported_integration", param=f"integrations[{i}].type")
        if missing(EXTRA_MODULES):
            raise AiaasError("This job sends its metrics to MLflow, and this worker lacks the mlflow extra: "
                             "pip install 'aiaas[mlflow]' on the workers, then create the job again.",
                             code="integration_unavailable", param=f"integrations[{i}]")
        sinks.append(MlflowSink(item["mlflow"], job_id=job_id, attempt=attempt))
    return Tracker(sinks, params)
