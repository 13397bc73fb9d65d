"""Do two runtimes of one model answer alike? The accuracy guard for cheaper precisions.

Pure numpy on *served* outputs (what Predictor.predict / embed return), so the rule
reads the same whether it compares int8 to fp32 at export time or a canary to the
current version later. A lower precision is accepted only if it agrees with the
reference on >= 99% of the validation texts and, when labels are known, loses at most
0.5 accuracy points against them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MIN_AGREEMENT = 0.99
MAX_ACCURACY_DROP_PT = 0.5
# Embeddings "agree" when the cosine to the reference embedding reaches this.
MIN_EMBEDDING_COSINE = 0.98
# Regression outputs "agree" within this fraction of the reference predictions' spread.
REGRESSION_TOLERANCE = 0.05
DEFAULT_THRESHOLD = 0.5

# Used when the caller has no validation split (e.g. a base model for embeddings):
# varied length, vocabulary and punctuation so quantisation error has somewhere to show.
DEFAULT_VALIDATION_TEXTS: tuple[str, ...] = (
    "My card was charged twice for the same order, please refund one of the payments.",
    "The app crashes every time I open the settings page on my phone.",
    "Where is my package? The tracking page has not changed in five days.",
    "Great service, the support team answered within minutes. Thank you!",
    "I would like to cancel my subscription before the next billing date.",
    "How do I change the delivery address for an order that has already shipped?",
    "Login fails with error 403 even after resetting my password twice.",
    "Terrible experience. The product arrived broken and nobody answers emails.",
    "Can I upgrade from the basic plan to the team plan in the middle of the month?",
    "The invoice shows the wrong VAT number for our company.",
    "hi",
    "refund",
    "Is there an API rate limit, and what happens when we exceed it?",
    "The new dashboard is much faster than the old one, nice work.",
    "Our warehouse in Rotterdam did not receive the pallet scheduled for Tuesday.",
    "Please delete all personal data you hold about me under GDPR article 17.",
    "The battery drains from 100% to 20% in about three hours of light use.",
    "Do you ship to Canada, and if so how long does customs clearance usually take?",
    "I love it!!!",
    "The screen flickers when the brightness is below thirty percent.",
    "Why was my account suspended without any warning or explanation?",
    "Two-factor authentication codes arrive after they have already expired.",
    "The recipe app keeps suggesting dishes with peanuts although I set an allergy filter.",
    "Thanks, that fixed it.",
    "We need a copy of your SOC 2 report before we can sign the contract.",
    "The train was forty minutes late and the connecting bus had already left.",
    "Could you explain the difference between the monthly and the annual licence?",
    "Sound cuts out on the left earbud whenever the phone is in my pocket.",
    "The hotel room was clean, quiet and the breakfast was excellent.",
    "Nothing works. Nothing. I have tried everything in the troubleshooting guide.",
    "Price increased by 30% with no notice; I am considering other providers.",
    "The documentation for the export endpoint is missing the pagination parameters.",
)


@dataclass(frozen=True)
class GuardDecision:
    accepted: bool
    agreement: float  # fraction of texts where candidate and reference agree
    accuracy_reference: float | None  # percent against labels (R^2 x 100 for regression), None if unlabelled
    accuracy_candidate: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def guard_decision(
    *,
    task: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    labels: Sequence[Any] | None = None,
    label_names: Sequence[str] | None = None,
    thresholds: Sequence[float] | None = None,
    min_agreement: float = MIN_AGREEMENT,
    max_accuracy_drop_pt: float = MAX_ACCURACY_DROP_PT,
) -> GuardDecision:
    """Compare served outputs of a candidate precision with the reference (fp32) ones.

    Agreement per task: single-label -> same argmax; multi-label -> same label set after
    thresholds; regression -> within 5% of the reference spread; embedding -> cosine >= 0.98.
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"reference {reference.shape} and candidate {candidate.shape} differ in shape")
    if len(reference) == 0:
        return GuardDecision(False, 0.0, None, None, "no validation texts to compare on")
    agree = _agreement(task, reference, candidate, thresholds)
    agreement = round(float(agree.mean()), 6)
    acc_ref = acc_cand = None
    if labels is not None:
        truth = _encode_labels(task, labels, label_names, reference.shape)
        acc_ref = _accuracy(task, reference, truth, thresholds)
        acc_cand = _accuracy(task, candidate, truth, thresholds)
    if agreement < min_agreement:
        return GuardDecision(
            False,
            agreement,
            acc_ref,
            acc_cand,
            f"agrees with fp32 on {agreement:.2%} of texts (< {min_agreement:.0%})",
        )
    if acc_ref is not None and acc_cand is not None and acc_ref - acc_cand > max_accuracy_drop_pt + 1e-9:
        return GuardDecision(
            False,
            agreement,
            acc_ref,
            acc_cand,
            f"loses {acc_ref - acc_cand:.2f} accuracy points (> {max_accuracy_drop_pt})",
        )
    return GuardDecision(True, agreement, acc_ref, acc_cand, f"agrees on {agreement:.2%} of texts")


def _agreement(
    task: str, ref: np.ndarray, cand: np.ndarray, thresholds: Sequence[float] | None
) -> np.ndarray:
    if task == "single_label_classification":
        same: np.ndarray = ref.argmax(axis=1) == cand.argmax(axis=1)
        return same
    if task == "multi_label_classification":
        thr = _thresholds(thresholds, ref.shape[1])
        same = ((ref >= thr) == (cand >= thr)).all(axis=1)
        return same
    if task == "regression":
        spread = float(ref.std()) or float(np.abs(ref).mean()) or 1.0
        same = (np.abs(ref - cand) <= REGRESSION_TOLERANCE * spread).all(axis=1)
        return same
    if task == "embedding":
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
        cosine = (ref * cand).sum(axis=1) / np.maximum(norms, 1e-12)
        same = cosine >= MIN_EMBEDDING_COSINE
        return same
    raise ValueError(f"unknown task {task!r}")


def _thresholds(thresholds: Sequence[float] | None, n: int) -> np.ndarray:
    if thresholds is None:
        return np.full(n, DEFAULT_THRESHOLD)
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.shape != (n,):
        raise ValueError(f"{len(thr)} thresholds for {n} labels")
    return thr


def _encode_labels(
    task: str, labels: Sequence[Any], names: Sequence[str] | None, shape: tuple[int, ...]
) -> np.ndarray:
    """Class indices (single-label), a multi-hot matrix (multi-label) or floats (regression)."""
    index = {str(name): i for i, name in enumerate(names or [])}

    def one(label: Any) -> int:
        if isinstance(label, bool):
            raise ValueError(f"label {label!r} is neither a class name nor an index")
        if isinstance(label, int | np.integer) and 0 <= int(label) < shape[1]:
            return int(label)
        if str(label) in index:
            return index[str(label)]
        raise ValueError(f"unknown label {label!r}; known: {sorted(index)}")

    if task == "single_label_classification":
        return np.array([one(label) for label in labels], dtype=np.int64)
    if task == "multi_label_classification":
        hot = np.zeros(shape, dtype=bool)
        for row, label in enumerate(labels):
            # A row is either the positive labels (names or indices) or a 0/1 vector of
            # length C; a numeric 0/1 list of exactly C items is read as the latter.
            items = [label] if isinstance(label, str) else list(label)
            numeric = all(isinstance(v, int | np.integer) and int(v) in (0, 1) for v in items)
            if numeric and len(items) == shape[1]:
                hot[row] = np.asarray(items, dtype=bool)
            else:
                hot[row, [one(v) for v in items]] = True
        return hot
    if task == "regression":
        return np.asarray(labels, dtype=np.float64).reshape(shape)
    raise ValueError(f"task {task!r} has no labels to score against")


def _accuracy(task: str, outputs: np.ndarray, truth: np.ndarray, thresholds: Sequence[float] | None) -> float:
    if task == "single_label_classification":
        score = float((outputs.argmax(axis=1) == truth).mean())
    elif task == "multi_label_classification":
        score = float(((outputs >= _thresholds(thresholds, outputs.shape[1])) == truth).mean())
    else:  # regression: R^2, which is on the same 0..100 "points" scale as accuracy
        total = float(((truth - truth.mean()) ** 2).sum())
        residual = float(((truth - outputs) ** 2).sum())
        score = 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else -math.inf)
    return round(100.0 * score, 4)
