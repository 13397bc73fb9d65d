"""NB-weighted n-gram features for the tfidf-linear family (Wang & Manning 2012, "NBSVM").

Each feature is scaled by its log-count ratio between the positive and the negative
rows, r = log((p / |p|_1) / (q / |q|_1)) with p = alpha + sum of the positive rows'
features (q likewise), and a logistic regression is fit on x * r. One r per binary
problem: per label (multi-label), per class one-vs-rest (more than two classes), or
one (two classes). Here x is the family's own L2-normalised sublinear TF-IDF (the
TF-IDF variant of NBSVM), so the served graph does not change: x * r @ w = x @ (r * w),
and r is folded into the head's weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aiaas.training.classical import ABSENT_BIAS, LinearHead

ALPHA = 1.0


def log_count_ratio(x: Any, positive: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """r for one binary problem: float32 [F]."""
    # Column sums of the positive rows and of the rest as products with x (x[positive] and x[~positive]
    # copied the whole matrix, one problem at a time: per class in one-vs-rest).
    is_positive = positive.astype(np.float64)
    column_sums = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
    positive_sums = np.asarray(x.T @ is_positive, dtype=np.float64).ravel()
    p = alpha + positive_sums
    q = alpha + (column_sums - positive_sums)
    return (np.log(p / p.sum()) - np.log(q / q.sum())).astype(np.float32)


def _binary(
    x: Any, positive: np.ndarray, strength: float, cw: str | None, seed: int
) -> tuple[np.ndarray, float]:
    """Effective (weights [F], bias) of one NB-weighted logistic regression."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    r = log_count_ratio(x, positive)
    # x * r as the float64 CSR matrix lbfgs fits on, scaled in place: one copy of x (x @ diags(r)
    # made a float32 one, which scikit-learn then copied again to float64).
    scaled = sp.csr_matrix(x, dtype=np.float64, copy=True)
    scaled.data *= r[scaled.indices]
    model = LogisticRegression(C=strength, max_iter=2000, class_weight=cw, random_state=seed)
    model.fit(scaled, positive.astype(np.int64))
    return (model.coef_[0] * r).astype(np.float32), float(model.intercept_[0])


def fit_nb_head(
    task: str, x: Any, y: np.ndarray, n_out: int, strength: float, *, balanced: bool, seed: int
) -> LinearHead:
    """Like classical.fit_head, with NB-weighted features (classification tasks only)."""
    if task == "regression":
        raise ValueError("NB weighting needs classes; regression has none")
    weights = np.zeros((x.shape[1], n_out), dtype=np.float32)
    bias = np.zeros(n_out, dtype=np.float32)
    cw = "balanced" if balanced else None
    if task == "multi_label_classification":
        for j in range(n_out):
            column = y[:, j] > 0.5
            if column.all() or not column.any():
                bias[j] = -ABSENT_BIAS if column.all() else ABSENT_BIAS
                continue
            weights[:, j], bias[j] = _binary(x, column, strength, cw, seed)
        return LinearHead(weights, bias)
    present = np.unique(y)
    bias[:] = ABSENT_BIAS
    if len(present) == 1:
        bias[present[0]] = 0.0
        return LinearHead(weights, bias)
    if len(present) == 2:  # logits (0, z): the same softmax as one binary model
        bias[present[0]] = 0.0
        weights[:, present[1]], bias[present[1]] = _binary(x, y == present[1], strength, cw, seed)
        return LinearHead(weights, bias)
    for cls in present:  # one-vs-rest; the softmax over their scores is calibrated afterwards
        weights[:, cls], bias[cls] = _binary(x, y == cls, strength, cw, seed)
    return LinearHead(weights, bias)
