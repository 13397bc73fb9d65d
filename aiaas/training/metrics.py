"""Validation metrics per task, in plain numpy (all values plain Python for JSON and checkpoints)."""

from __future__ import annotations

from typing import Any

import numpy as np

from aiaas.data.profile import score_histogram
from aiaas.protocol.tasks import MULTI_LABEL, REGRESSION, SINGLE_LABEL

# Candidate decision thresholds for multi-label tuning.
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)

# The metric early stopping and "best checkpoint" follow, per task, and its direction.
SELECTION: dict[str, tuple[str, int]] = {
    SINGLE_LABEL: ("macro_f1", +1),
    MULTI_LABEL: ("micro_f1", +1),
    REGRESSION: ("rmse", -1),
}


def _f1(tp: float, fp: float, fn: float) -> float:
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom else 0.0


def single_label(logits: np.ndarray, y: np.ndarray, labels: list[str]) -> dict[str, Any]:
    pred = logits.argmax(axis=1)
    k = len(labels)
    matrix = np.zeros((k, k), dtype=np.int64)  # rows: true label, columns: predicted
    np.add.at(matrix, (y, pred), 1)
    per_label: dict[str, dict[str, float | int]] = {}
    f1s = []
    for i, label in enumerate(labels):
        tp = matrix[i, i]
        fp = matrix[:, i].sum() - tp
        fn = matrix[i, :].sum() - tp
        f1 = _f1(tp, fp, fn)
        f1s.append(f1)
        per_label[label] = {
            "precision": float(tp / (tp + fp)) if tp + fp else 0.0,
            "recall": float(tp / (tp + fn)) if tp + fn else 0.0,
            "f1": f1,
            "support": int(matrix[i, :].sum()),
        }
    # Macro-F1 over labels present in validation: an absent label has no defined F1.
    present = [f for f, label in zip(f1s, labels, strict=True) if per_label[label]["support"] > 0]
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True)) if len(y) else logits
    top = (shifted.max(axis=1) / shifted.sum(axis=1)) if len(y) else np.zeros(0)
    return {
        "accuracy": float((pred == y).mean()) if len(y) else 0.0,
        "macro_f1": float(np.mean(present)) if present else 0.0,
        "confusion_matrix": matrix.tolist(),
        "per_label": per_label,
        "top_score_histogram": score_histogram(top),  # monitoring's confidence reference
    }


def multi_label(probs: np.ndarray, y: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Tune one threshold per label on validation (max F1), then score with them."""
    thresholds = np.full(len(labels), 0.5)
    for j in range(len(labels)):
        truth = y[:, j] > 0.5
        if not truth.any():
            continue  # nothing to tune on: keep 0.5
        best, best_f1 = 0.5, -1.0
        for t in THRESHOLDS:
            guess = probs[:, j] >= t
            f1 = _f1((guess & truth).sum(), (guess & ~truth).sum(), (~guess & truth).sum())
            # Ties go to the threshold nearest 0.5: less overfit to a small validation set.
            if f1 > best_f1 + 1e-12 or (abs(f1 - best_f1) <= 1e-12 and abs(t - 0.5) < abs(best - 0.5)):
                best, best_f1 = float(t), f1
        thresholds[j] = best
    pred = probs >= thresholds
    truth = y > 0.5
    tp = (pred & truth).sum(axis=0)
    fp = (pred & ~truth).sum(axis=0)
    fn = (~pred & truth).sum(axis=0)
    per_label = {
        label: {
            "f1": _f1(tp[j], fp[j], fn[j]),
            "threshold": float(thresholds[j]),
            "support": int(truth[:, j].sum()),
        }
        for j, label in enumerate(labels)
    }
    present = [per_label[label]["f1"] for label in labels if per_label[label]["support"] > 0]
    return {
        "accuracy": float((pred == truth).all(axis=1).mean()) if len(y) else 0.0,  # exact match
        "micro_f1": _f1(tp.sum(), fp.sum(), fn.sum()),
        "macro_f1": float(np.mean(present)) if present else 0.0,
        "thresholds": {label: float(thresholds[j]) for j, label in enumerate(labels)},
        "per_label": per_label,
        "top_score_histogram": score_histogram(probs.max(axis=1) if len(y) else np.zeros(0)),
        "predicted_label_counts": {label: int(pred[:, j].sum()) for j, label in enumerate(labels)},
    }


def regression(pred: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    err = pred - y
    var = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    return {
        "rmse": float(np.sqrt((err**2).mean())) if len(y) else 0.0,
        "mae": float(np.abs(err).mean()) if len(y) else 0.0,
        "r2": float(1.0 - (err**2).sum() / var) if var > 0 else 0.0,
    }


def selection_score(task: str, metrics: dict[str, Any]) -> tuple[float, float]:
    """Higher is better. Ties on the metric (common on tiny validation sets) go to lower loss."""
    name, sign = SELECTION[task]
    return (sign * float(metrics[name]), -float(metrics.get("valid_loss", 0.0)))
