"""Monitoring per deployment: live traffic compared with the training data, by population stability index.

Why in memory: a database write per request would cost more than the model. `TrafficMonitor.observe`
(one call per request, from the inference use case) turns a request into one small vector of counts
(text length bins, script buckets, predicted labels, top-score bins, texts, tokens, [UNK] tokens) and
adds it, under a lock, to two structures per deployment:

* a ring of the last 1,000 requests' vectors with their running sum (the "last_1000_requests" window);
* one summed vector per minute for the last day ("last_hour" and "last_day" add up minutes).

The reference comes from what training stored: the data report (length and script histograms; older
models: length percentiles) and the validation predictions in the model card (predicted labels from the
confusion matrix, top-score histogram). A feature whose PSI in a window with at least `min_samples`
texts passes the threshold is flagged; a deployment that gains a flag records one drift event (audit log
+ `deployment.drift` webhook) until the flag clears. Counts are per process (see the report).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select

from aiaas.data import profile as stats
from aiaas.protocol.tasks import MULTI_LABEL, SINGLE_LABEL
from aiaas.serving.interface import Outputs
from aiaas.store.db import Database
from aiaas.store.models import Deployment, FineTuningJob, Model

log = logging.getLogger(__name__)

RING = 1000
MINUTES_KEPT = 24 * 60
WINDOWS = {"last_1000_requests": None, "last_hour": 60, "last_day": MINUTES_KEPT}  # minutes, None: the ring
FEATURES = ("text_length", "script", "predicted_label", "top_score")


@dataclass
class _Layout:
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        n_len, n_scr, n_lab = len(stats.LENGTH_BINS), len(stats.SCRIPTS), len(self.labels)
        self.length = 0
        self.script = n_len
        self.label = n_len + n_scr
        self.score = self.label + n_lab
        self.texts = self.score + len(stats.SCORE_BINS)
        self.tokens, self.unknown, self.counted = self.texts + 1, self.texts + 2, self.texts + 3
        self.size = self.texts + 4
        self.slices = {"text_length": (self.length, self.script), "script": (self.script, self.label),
                       "predicted_label": (self.label, self.score), "top_score": (self.score, self.texts)}
        self.bins = {"text_length": stats.LENGTH_BINS, "script": stats.SCRIPTS, "predicted_label": self.labels,
                     "top_score": stats.SCORE_BINS}


@dataclass
class _Deployment:
    """The live counts of one deployment (one model version: a new model starts them afresh)."""

    org_id: str
    name: str
    model_id: str
    layout: _Layout
    ring: np.ndarray = field(init=False)
    ring_sum: np.ndarray = field(init=False)
    ring_pos: int = 0
    requests: int = 0
    flagged: frozenset[str] = frozenset()
    changed: bool = False
    newest_minute: int = -1
    minutes: np.ndarray = field(init=False)  # [MINUTES_KEPT, size] counts, row = minute % MINUTES_KEPT
    minute_of: np.ndarray = field(init=False)  # the minute each row holds (-1: none)
    minute_requests: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        # int32: a request's (or a minute's) counts fit, and the structures take half the memory.
        self.ring = np.zeros((RING, self.layout.size), dtype=np.int32)
        self.ring_sum = np.zeros(self.layout.size, dtype=np.int64)
        self.minutes = np.zeros((MINUTES_KEPT, self.layout.size), dtype=np.int32)
        self.minute_of = np.full(MINUTES_KEPT, -1, dtype=np.int64)
        self.minute_requests = np.zeros(MINUTES_KEPT, dtype=np.int32)

    def add(self, vec: np.ndarray, minute: int) -> None:
        slot = self.ring_pos % RING
        self.ring_sum += vec - self.ring[slot]
        self.ring[slot] = vec
        self.ring_pos += 1
        self.requests += 1
        row = minute % MINUTES_KEPT
        if self.minute_of[row] != minute:  # a minute a day old (or none) gives way
            self.minutes[row] = 0
            self.minute_requests[row] = 0
            self.minute_of[row] = minute
        self.minutes[row] += vec
        self.minute_requests[row] += 1
        self.newest_minute = max(self.newest_minute, minute)
        self.changed = True

    def window(self, minutes: int | None, now_minute: int) -> tuple[np.ndarray, int]:
        """The summed counts and the request count of one window."""
        if minutes is None:
            return self.ring_sum.copy(), min(self.ring_pos, RING)
        inside = (self.minute_of > now_minute - minutes) & (self.minute_of <= now_minute)
        return self.minutes[inside].sum(axis=0, dtype=np.int64), int(self.minute_requests[inside].sum())


class TrafficMonitor:
    """state.services.monitoring: observes inference on deployments, answers monitoring reports,
    and raises drift events. `emit(org_id, name, report)` records one (it runs in a thread)."""

    def __init__(self, db: Database, *, psi_threshold: float = 0.2, min_samples: int = 100,
                 check_seconds: float = 30.0, clock: Callable[[], float] = time.time,
                 emit: Callable[[str, str, dict[str, Any]], None] | None = None) -> None:
        self.db = db
        self.psi_threshold = psi_threshold
        self.min_samples = min_samples
        self.check_seconds = check_seconds
        self.clock = clock
        self.emit = emit
        self._lock = threading.Lock()
        self._deployments: dict[str, _Deployment] = {}  # deployment id -> counts
        self._references: dict[tuple[str, str], dict[str, Any]] = {}  # (deployment id, model id) -> reference
        self._task: asyncio.Task[None] | None = None

    # -- the per-request hook ---------------------------------------------------------------------
    def observe(self, deployment_id: str, org_id: str, name: str, model_id: str, labels: tuple[str, ...],
                texts: list[str], out: Outputs, thresholds: tuple[float, ...] | None = None) -> None:
        """Count one request to a deployment. Cheap: no I/O, a few small numpy operations."""
        dep = self._deployments.get(deployment_id)
        if dep is None or dep.model_id != model_id:
            dep = _Deployment(org_id, name, model_id, _Layout(labels))
            self._deployments[deployment_id] = dep
        lay = dep.layout
        vec = np.zeros(lay.size, dtype=np.int64)
        edges, scripts = stats.LENGTH_EDGES, lay.script
        for t in texts:
            vec[bisect_right(edges, len(t)) - 1] += 1
            vec[scripts + stats.script_of(t)] += 1
        rows = out.rows
        task = out.info.task
        if labels and rows.ndim == 2 and rows.shape[1] == len(labels) and task in (SINGLE_LABEL, MULTI_LABEL):
            if task == SINGLE_LABEL:
                vec[lay.label:lay.score] += np.bincount(rows.argmax(axis=1), minlength=len(labels))
            else:
                cut = np.asarray(thresholds if thresholds else [0.5] * len(labels))
                vec[lay.label:lay.score] += (rows >= cut).sum(axis=0)
            top = np.clip((rows.max(axis=1) * 10).astype(np.int64), 0, 9)
            vec[lay.score:lay.texts] += np.bincount(top, minlength=10)
        vec[lay.texts] = len(texts)
        vec[lay.tokens] = out.tokens
        if out.unknown_tokens is not None:
            vec[lay.unknown] = out.unknown_tokens
            vec[lay.counted] = out.tokens
        with self._lock:
            dep.add(vec, int(self.clock() // 60))

    # -- reports -----------------------------------------------------------------------------------
    def report(self, deployment_id: str, name: str, model_id: str) -> dict[str, Any]:
        """Windows, reference and flags of one deployment (blocking: reads the reference; call from a thread).
        Raises a drift event when a flag appears."""
        reference = self._reference(deployment_id, model_id)
        dep = self._deployments.get(deployment_id)
        now_minute = int(self.clock() // 60)
        windows: dict[str, Any] = {}
        flags: set[str] = set()
        if dep is not None and dep.model_id == model_id:
            with self._lock:
                sums = {w: dep.window(m, now_minute) for w, m in WINDOWS.items()}
            for w, (vec, requests) in sums.items():
                windows[w] = self._window(dep.layout, vec, requests, reference)
                flags.update(f"{feature}" for feature in windows[w]["drift"])
        else:
            windows = {w: {"requests": 0, "texts": 0, "drift": []} for w in WINDOWS}
        report = {"object": "deployment.monitoring", "deployment": name, "model": model_id,
                  "psi_threshold": self.psi_threshold, "min_samples": self.min_samples,
                  "windows": windows, "reference": reference, "drift": sorted(flags), "drifted": bool(flags)}
        if dep is not None and dep.model_id == model_id:
            self._maybe_emit(dep, frozenset(flags), report)
        return report

    def _window(self, lay: _Layout, vec: np.ndarray, requests: int, reference: dict[str, Any]) -> dict[str, Any]:
        texts = int(vec[lay.texts])
        out: dict[str, Any] = {"requests": requests, "texts": texts, "tokens": int(vec[lay.tokens]),
                               "unknown_token_rate": (round(int(vec[lay.unknown]) / int(vec[lay.counted]), 6)
                                                      if vec[lay.counted] else None),
                               "distributions": {}, "psi": {}, "drift": []}
        for feature in FEATURES:
            a, b = lay.slices[feature]
            counts = [int(x) for x in vec[a:b]]
            bins = lay.bins[feature]
            out["distributions"][feature] = {k: c for k, c in zip(bins, counts, strict=True) if c}
            ref = (reference.get(feature) or {}).get("distribution")
            observed = sum(counts)
            if not ref or not observed:
                out["psi"][feature] = None
                continue
            value = stats.psi([float(ref.get(k, 0.0)) for k in bins], counts)
            out["psi"][feature] = round(value, 4)
            if observed >= self.min_samples and value > self.psi_threshold:
                out["drift"].append(feature)
        return out

    def _maybe_emit(self, dep: _Deployment, flags: frozenset[str], report: dict[str, Any]) -> None:
        with self._lock:
            new = flags - dep.flagged
            dep.flagged = flags
        if new and self.emit is not None:
            try:
                self.emit(dep.org_id, dep.name, {"deployment": dep.name, "model": dep.model_id,
                                                 "features": sorted(new), "drift": sorted(flags),
                                                 "psi": {w: v["psi"] for w, v in report["windows"].items()}})
            except Exception:  # noqa: BLE001 - the next check retries: the flag is dropped so it re-appears
                with self._lock:
                    dep.flagged = dep.flagged - new
                log.exception("could not record the drift event of deployment %s", dep.name)

    def _reference(self, deployment_id: str, model_id: str) -> dict[str, Any]:
        key = (deployment_id, model_id)
        cached = self._references.get(key)
        if cached is None:
            with self.db.session() as s:
                model = s.scalar(select(Model).where(Model.id == model_id))
                job = s.get(FineTuningJob, model.job_id) if model is not None and model.job_id else None
                cached = build_reference(model.card if model is not None else {},
                                         (job.data_report if job is not None else None) or {})
            self._references[key] = cached
        return cached

    # -- the background check ----------------------------------------------------------------------
    def start(self) -> None:
        """Check every deployment with new traffic every `check_seconds`, so drift events are raised
        without anybody asking for the report. Call from the event loop."""
        if self._task is None and self.check_seconds > 0:
            self._task = asyncio.get_running_loop().create_task(self._check_loop())

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_seconds)
            try:
                await asyncio.to_thread(self.check_all)
            except Exception:  # noqa: BLE001 - a broken check must not end the loop
                log.exception("monitoring check failed")

    def check_all(self) -> int:
        """Evaluate every deployment that saw traffic since the last check; returns how many."""
        stale = int(self.clock() // 60) - MINUTES_KEPT
        with self._lock:
            for k in [k for k, d in self._deployments.items() if d.newest_minute < stale]:
                del self._deployments[k]  # a day without traffic: nothing left in any window but the ring
            todo = [(k, d) for k, d in self._deployments.items() if d.changed]
            for _, d in todo:
                d.changed = False
        with self.db.session() as s:
            alive = set(s.scalars(select(Deployment.id).where(Deployment.id.in_([k for k, _ in todo]))))
        for key, dep in todo:
            if key in alive:
                self.report(key, dep.name, dep.model_id)
            else:
                self._deployments.pop(key, None)
        return len(todo)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


def build_reference(card: dict[str, Any], data_report: dict[str, Any]) -> dict[str, Any]:
    """What training stored, as distributions over the monitoring bins; each with its source, or None."""
    ref: dict[str, Any] = {f: None for f in FEATURES}
    profile = data_report.get("text_profile") or {}
    if profile.get("length_histogram"):
        ref["text_length"] = {"source": "data_report.text_profile", "distribution": profile["length_histogram"]}
    elif data_report.get("text_length_chars"):
        approx = stats.histogram_from_percentiles(data_report["text_length_chars"])
        if approx:
            ref["text_length"] = {"source": "data_report.text_length_chars (percentiles, approximate)",
                                  "distribution": {k: round(v, 3) for k, v in zip(stats.LENGTH_BINS, approx,
                                                                                   strict=True)}}
    if profile.get("scripts"):
        ref["script"] = {"source": "data_report.text_profile", "distribution": profile["scripts"]}
    labels = [str(x) for x in card.get("labels") or []]
    metrics = card.get("metrics") or {}
    matrix = metrics.get("confusion_matrix")
    if labels and isinstance(matrix, list) and len(matrix) == len(labels):
        predicted = np.asarray(matrix, dtype=np.int64).sum(axis=0).tolist()
        ref["predicted_label"] = {"source": "validation predictions",
                                  "distribution": dict(zip(labels, predicted, strict=True))}
    elif isinstance(metrics.get("predicted_label_counts"), dict):
        ref["predicted_label"] = {"source": "validation predictions",
                                  "distribution": metrics["predicted_label_counts"]}
    else:
        counts = ((card.get("training_data") or {}).get("label_counts") or {})
        counts = counts.get("validation") or counts.get("train") if "train" in counts else counts
        if counts:
            ref["predicted_label"] = {"source": "training label counts", "distribution": counts}
    hist = metrics.get("top_score_histogram")
    if isinstance(hist, list) and len(hist) == len(stats.SCORE_BINS):
        ref["top_score"] = {"source": "validation predictions",
                            "distribution": dict(zip(stats.SCORE_BINS, hist, strict=True))}
    return ref


def record_drift(db: Database, org_id: str, name: str, data: dict[str, Any]) -> None:
    """A drift event: an audit record and a `deployment.drift` webhook, in one transaction."""
    from aiaas.services import audit, webhooks

    with db.session() as s:
        audit.record(s, audit.Actor(org_id=org_id, key_id=None), "deployment.drift", target_type="deployment",
                     target_id=name, details={"features": data["features"], "psi": data["psi"]})
        webhooks.emit(s, org_id, "deployment.drift", data)
    log.warning("deployment %s drifted from its training data: %s", name, ", ".join(data["features"]))


def drift_monitor(settings: Any, db: Database) -> TrafficMonitor:
    return TrafficMonitor(db, psi_threshold=settings.monitoring_psi_threshold,
                          min_samples=settings.monitoring_min_samples,
                          check_seconds=settings.monitoring_check_seconds,
                          emit=lambda org_id, name, data: record_drift(db, org_id, name, data))


def drift_source(monitor: TrafficMonitor) -> Callable[[], list[tuple[str, tuple[str, ...], float]]]:
    """A telemetry source (aiaas/core/telemetry.py): 1 per flagged feature, 0 per other feature, for each
    deployment and model version with traffic in this process (read at snapshot time)."""

    def samples() -> list[tuple[str, tuple[str, ...], float]]:
        with monitor._lock:
            rows = [(d.name, d.model_id, d.flagged) for d in monitor._deployments.values()]
        return [("aiaas_deployment_drift", (name, model, feature), 1.0 if feature in flagged else 0.0)
                for name, model, flagged in rows for feature in FEATURES]

    return samples
