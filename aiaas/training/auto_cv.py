"""auto on small data: k-fold cross-validation of the candidates instead of one validation split.

Under `KFold.max_rows` labelled rows (train + validation together; the setting
`auto_kfold_max_rows`, default 1,000) a single validation split is a noisy judge: a few
dozen rows decide between families whose true scores differ by less than that noise. So
auto pools the train and validation rows and deals them into k folds (`folds`):

    single-label   stratified: each class's rows, shuffled (seeded), dealt round-robin over
                   the folds; k = `KFold.k` (5), fewer when the smallest class has fewer rows
                   (never under 2)
    multi-label    the same, stratified on each row's rarest label, as aiaas.data.split does
                   (not iterative stratification: with one label per row counted, frequent labels
                   even out by themselves)
    regression     plain shuffled KFold

Every candidate that is cross-validated is trained k times (`run_folds`), each time on k-1
folds with the remaining one as its validation set: the same protocol as the single split
(its own settings and calibration are chosen on that fold), repeated. The choice is made by
the mean of the k fold scores of the engine's selection metric; the per-fold scores, their
mean and standard deviation are recorded (`summary`). The out-of-fold scores (each row
scored by the one fold model that did not train on it) feed the ensemble's weight and the
refit's calibration (aiaas.training.auto_refit).
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.training import metrics
from aiaas.training.types import ExampleLike, PreparedDataLike, TrainCallbacks, TrainingStopped, TrainResult

DEFAULT_MAX_ROWS = 1000
DEFAULT_K = 5
# Fewer pooled rows than this per fold and CV is not worth it (calibration needs 2 rows a fold).
MIN_ROWS_PER_FOLD = 2
SUMMARY_KEYS = ("accuracy", "macro_f1", "micro_f1", "rmse", "mae", "r2", "valid_loss", "ece")


@dataclass(frozen=True)
class KFold:
    """When auto cross-validates and with how many folds (the settings auto_kfold_max_rows, auto_kfold_k).
    max_rows 0 turns k-fold CV off: every job is judged on its validation split."""

    max_rows: int = DEFAULT_MAX_ROWS
    k: int = DEFAULT_K

    def __post_init__(self) -> None:
        if self.max_rows < 0 or self.k < 2:
            raise ValueError(f"KFold needs max_rows >= 0 and k >= 2; got {self.max_rows}, {self.k}")


@dataclass
class FoldData:
    """A PreparedDataLike over the pooled rows: k-1 folds to train on, one to validate on."""

    task: str
    train: Sequence[ExampleLike]
    validation: Sequence[ExampleLike]
    labels: list[str]
    report: dict = field(default_factory=dict)
    cleaning: dict = field(default_factory=dict)


@dataclass
class Folds:
    """The pooled rows (train then validation) and each row's fold."""

    task: str
    rows: list[ExampleLike]
    labels: list[str]
    fold_of: np.ndarray
    k: int
    method: str

    def data(self, i: int) -> FoldData:
        train = [r for r, f in zip(self.rows, self.fold_of, strict=True) if f != i]
        held = [r for r, f in zip(self.rows, self.fold_of, strict=True) if f == i]
        return FoldData(self.task, train, held, self.labels)

    def held_out(self, i: int) -> np.ndarray:
        return np.flatnonzero(self.fold_of == i)

    def all_rows(self) -> FoldData:
        return FoldData(self.task, list(self.rows), [], self.labels)

    def describe(self) -> dict[str, Any]:
        return {"k": self.k, "method": self.method, "rows": len(self.rows),
                "fold_rows": [int((self.fold_of == i).sum()) for i in range(self.k)]}  # fmt: skip


def pooled_rows(data: PreparedDataLike) -> int:
    return len(data.train) + len(data.validation)


def folds(data: PreparedDataLike, k: int, seed: int) -> Folds | None:
    """The k-fold assignment of train + validation rows, or None where there are too few rows for 2 folds."""
    rows = [*data.train, *data.validation]
    task = data.task
    rng = random.Random(seed)  # nosec B311 - dealing rows into folds, not security
    if task == "regression":
        k = min(k, len(rows) // MIN_ROWS_PER_FOLD)
        if k < 2:
            return None
        order = list(range(len(rows)))
        rng.shuffle(order)
        fold_of = np.empty(len(rows), dtype=np.int64)
        fold_of[order] = np.arange(len(rows)) % k
        return Folds(task, rows, list(data.labels), fold_of, k, "shuffled k-fold")
    keys = strata(task, rows)
    smallest = min(Counter(keys).values())
    k = min(k, max(2, smallest), len(rows) // MIN_ROWS_PER_FOLD)
    if k < 2:
        return None
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        by_key[key].append(i)
    fold_of = np.empty(len(rows), dtype=np.int64)
    offset = 0  # each class starts where the last one stopped, so fold sizes differ by one at most
    for key in sorted(by_key):
        members = by_key[key]
        rng.shuffle(members)
        for j, i in enumerate(members):
            fold_of[i] = (offset + j) % k
        offset = (offset + len(members)) % k
    method = "stratified k-fold"
    if task != "single_label_classification":
        method += " (on each row's rarest label)"
    return Folds(task, rows, list(data.labels), fold_of, k, method)


def strata(task: str, rows: Sequence[ExampleLike]) -> list[str]:
    """Each row's stratum: its label (single-label), its rarest label (multi-label)."""
    if task == "single_label_classification":
        return [str(r.label) for r in rows]
    as_lists = [list(r.label) if isinstance(r.label, list | tuple) else [str(r.label)] for r in rows]
    frequency = Counter(name for row in as_lists for name in row)
    return [min(row, key=lambda name: (frequency[name], name)) if row else "" for row in as_lists]


@dataclass
class FoldRun:
    """One family's k fold fits: their results, per-fold records and out-of-fold scores (rows x outputs)."""

    family: str
    results: list[TrainResult] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    oof: np.ndarray | None = None  # served scores: probabilities, or values for regression
    oof_raw: np.ndarray | None = None  # logits before each fold's calibration, where `fit` gives them
    stopped: str | None = None  # why the folds did not all run

    @property
    def complete(self) -> bool:
        return self.stopped is None and bool(self.results)

    def summary(self, task: str) -> dict[str, Any]:
        return summary(task, self.records)


def run_folds(
    family: str,
    split: Folds,
    fit: Callable[[int, FoldData], tuple[TrainResult, np.ndarray, np.ndarray | None]],
    callbacks: TrainCallbacks,
    deadline: float,
) -> FoldRun:
    """Fit `family` on each fold in turn; `fit(i, data)` returns the fold's result, its served scores
    (probabilities, or values) on the held-out fold and, if it has them, its uncalibrated logits there.
    Stops, saying why, when the next fold would end past `deadline` (judged by the slowest fold so far)."""
    run = FoldRun(family)
    slowest = 0.0
    for i in range(split.k):
        now = time.monotonic()
        if now + slowest > deadline:
            run.stopped = (
                f"the time budget would pass during fold {i + 1} of {split.k} "
                f"({max(0.0, deadline - now):.1f} s left, a fold takes ~{slowest:.1f} s)"
            )
            return run
        fold_started = time.monotonic()
        try:
            result, scores, raw = fit(i, split.data(i))
        except TrainingStopped as exc:
            if callbacks.should_stop():
                raise
            run.stopped = f"fold {i + 1} of {split.k} stopped: {exc or 'over its time limit'}"
            return run
        seconds = time.monotonic() - fold_started
        slowest = max(slowest, seconds)
        if run.oof is None:
            run.oof = np.zeros((len(split.rows), scores.shape[1]), dtype=np.float64)
        run.oof[split.held_out(i)] = scores
        if raw is not None:
            if run.oof_raw is None:
                run.oof_raw = np.zeros((len(split.rows), raw.shape[1]), dtype=np.float64)
            run.oof_raw[split.held_out(i)] = raw
        record = {
            "fold": i + 1,
            "train_rows": len(split.rows) - len(split.held_out(i)),
            "validation_rows": len(split.held_out(i)),
            "seconds": round(seconds, 2),
            **numbers(result.metrics),
        }
        run.results.append(result)
        run.records.append(record)
        metric = metrics.SELECTION[split.task][0]
        callbacks.event(
            "info",
            f"auto: {family} fold {i + 1} of {split.k}: {metric} {record.get(metric, float('nan')):.4f} "
            f"({seconds:.1f} s)",
            type="metrics",
            data={"family": family, "split": f"cv_{family}", "step": i + 1, "cv_fold": record,
                  **numbers(result.metrics)},  # fmt: skip
        )
    return run


def numbers(scores: dict[str, Any]) -> dict[str, float]:
    return {k: float(scores[k]) for k in SUMMARY_KEYS if isinstance(scores.get(k), int | float)}


def summary(task: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-fold scores, and each metric's mean and (population) standard deviation over the folds."""
    out: dict[str, Any] = {"folds": records, "mean": {}, "std": {}}
    for key in SUMMARY_KEYS:
        values = [r[key] for r in records if key in r]
        if values and len(values) == len(records):
            out["mean"][key] = round(statistics.fmean(values), 6)
            out["std"][key] = round(statistics.pstdev(values), 6)
    return out


def mean_pm(cv: dict[str, Any], metric: str) -> str:
    return f"{cv['mean'][metric]:.4f} ± {cv['std'][metric]:.4f}"


class Quiet:
    """A fold's callbacks: the job's stop, none of the fold's own events or checkpoints (one event per
    fold is written by run_folds instead; a fold's checkpoints are not the job's)."""

    def __init__(self, inner: TrainCallbacks) -> None:
        self.inner = inner

    def event(self, level: str, message: str, *, type: str = "message", data: dict | None = None) -> None:
        pass

    def checkpoint(self, step: int, path: Path, metrics: dict) -> None:
        pass

    def should_stop(self) -> bool:
        return self.inner.should_stop()


class Deadline:
    """The job's callbacks, plus a stop once the transformer's time is up."""

    def __init__(self, inner: TrainCallbacks, deadline: float) -> None:
        self.inner = inner
        self.deadline = deadline
        self.over_budget = False

    def event(self, level: str, message: str, *, type: str = "message", data: dict | None = None) -> None:
        self.inner.event(level, message, type=type, data=data)

    def checkpoint(self, step: int, path: Path, metrics: dict) -> None:
        self.inner.checkpoint(step, path, metrics)

    def should_stop(self) -> bool:
        if self.inner.should_stop():
            return True
        if time.monotonic() > self.deadline:
            self.over_budget = True
            return True
        return False

    def seconds_to_save_before_stop(self) -> float | None:
        """A shutdown saves a checkpoint first, as for a plain transformer job; the budget running out does not."""
        if self.over_budget:
            return None
        inner = getattr(self.inner, "seconds_to_save_before_stop", None)
        return inner() if inner is not None else None
