"""Calibrated scores: expected calibration error (ECE) and the fits that lower it.

    single-label   temperature scaling (Guo et al. 2017): softmax(z / T), one T fit on
                   validation logits by negative log-likelihood; argmax is unchanged
    multi-label    Platt scaling per label: sigmoid(a_j * z_j + c_j), a_j > 0 so the label's
                   ranking is unchanged (its decision threshold is tuned again afterwards)

Both are affine maps of the logits, so a linear model takes them into its weights and the
exported graph serves calibrated scores with no extra node and no runtime change.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

ECE_BINS = 15
# Where validation also picks the epoch kept, whether a share of its rows is held out of that to fit the
# calibration on (held_out_slice): rows that picked the epoch favour it, so a temperature fit on them could
# leave the model over-confident on new text. Off: measured on the bench (bench/README.md, "Which validation
# rows fit the temperature"), the held-out half lowered neither the transformer's nor char-cnn's test ECE
# and cost accuracy (fewer rows pick the epoch, fewer fit the temperature).
HOLD_OUT_SLICE = False
CALIBRATION_SHARE = 0.5
# Below this many validation rows both parts would be too small: all of them pick and fit.
MIN_SPLIT_ROWS = 100
# Temperatures searched (log-uniform bounds): below 0.05 or above 20 the model is broken, not shy.
T_BOUNDS = (0.05, 20.0)


def ece(task: str, probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float | None:
    """Expected calibration error with equal-width bins; None for regression or no rows.

    Single-label: top-label confidence against whether the top label is right. Multi-label:
    every (row, label) probability against that label's truth, pooled.
    """
    if task == "regression" or len(probs) == 0:
        return None
    if task == "single_label_classification":
        conf = probs.max(axis=1)
        hit = (probs.argmax(axis=1) == y).astype(np.float64)
    else:
        conf = probs.ravel()
        hit = (np.asarray(y).ravel() > 0.5).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(float(conf[mask].mean()) - float(hit[mask].mean()))
    return float(total / len(conf))


def split_indices(keys: Sequence[str], seed: int, share: float = CALIBRATION_SHARE) -> tuple[np.ndarray, np.ndarray]:
    """(selection rows, calibration rows): a deterministic stratified split of rows with these strata.

    Rows are shuffled within each stratum (seeded), the strata laid end to end, and every row at which
    the running count of share * position steps up goes to calibration: round(share * n) rows in all,
    each stratum's share within one row of it."""
    rng = random.Random(seed)  # nosec B311 - dealing rows, not security
    by_key: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        by_key.setdefault(key, []).append(i)
    order: list[int] = []
    for key in sorted(by_key):
        members = by_key[key]
        rng.shuffle(members)
        order.extend(members)
    pos = np.arange(len(order))
    to_fit = np.floor((pos + 1) * share + 0.5) > np.floor(pos * share + 0.5)
    chosen = np.asarray(order, dtype=np.int64)
    return np.sort(chosen[~to_fit]), np.sort(chosen[to_fit])


def held_out_slice(task: str, rows: Sequence[Any], seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """split_indices over validation rows stratified by label (multi-label: each row's rarest label), or
    None where no slice is held out (HOLD_OUT_SLICE off), there is nothing to calibrate (regression) or
    there are too few rows (MIN_SPLIT_ROWS) to split."""
    from aiaas.training.auto_cv import strata

    if not HOLD_OUT_SLICE or task == "regression" or len(rows) < MIN_SPLIT_ROWS:
        return None
    return split_indices(strata(task, rows), seed)


def _softmax_nll(logits: np.ndarray, y: np.ndarray, t: float) -> float:
    z = logits / t
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T minimising validation NLL of softmax(logits / T); 1.0 when there is nothing to fit."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    if len(y) < 2 or logits.shape[1] < 2:
        return 1.0
    lo, hi = (math.log(b) for b in T_BOUNDS)
    found = minimize_scalar(lambda s: _softmax_nll(logits, y, math.exp(s)), bounds=(lo, hi), method="bounded")
    t = math.exp(float(found.x))
    # Never worse than no scaling on the data it was fit on.
    return t if _softmax_nll(logits, y, t) <= _softmax_nll(logits, y, 1.0) else 1.0


def _bce(z: np.ndarray, y: np.ndarray) -> float:
    return float((np.maximum(z, 0) - z * y + np.logaddexp(0.0, -np.abs(z))).mean())


def fit_platt(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per label (a_j, c_j) minimising validation BCE of sigmoid(a_j z_j + c_j); (1, 0) for a label
    whose validation column has one value only, or where the fit would flip its ranking."""
    from scipy.optimize import minimize

    logits = np.asarray(logits, dtype=np.float64)
    y = (np.asarray(y) > 0.5).astype(np.float64)
    n_out = logits.shape[1]
    a, c = np.ones(n_out), np.zeros(n_out)
    for j in range(n_out):
        z, t = logits[:, j], y[:, j]
        if t.all() or not t.any():
            continue
        found = minimize(lambda p, z=z, t=t: _bce(p[0] * z + p[1], t), x0=np.array([1.0, 0.0]), method="L-BFGS-B",
                         bounds=[(1e-3, 50.0), (-30.0, 30.0)])  # fmt: skip
        if _bce(found.x[0] * z + found.x[1], t) <= _bce(z, t):
            a[j], c[j] = float(found.x[0]), float(found.x[1])
    return a, c


def fit_scaling(task: str, logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Per-output scale `a` and shift `c` (calibrated logits = logits * a + c) fit on held-out logits:
    temperature for single-label (a = 1/T, c = 0), per-label Platt for multi-label; and what to record."""
    if task == "single_label_classification":
        t = fit_temperature(logits, y)
        return np.full(logits.shape[1], 1.0 / t), np.zeros(logits.shape[1]), {
            "calibration": "temperature", "temperature": round(t, 6)}
    a, c = fit_platt(logits, y)
    return a, c, {"calibration": "platt", "platt": {"a": a.round(6).tolist(), "c": c.round(6).tolist()}}

