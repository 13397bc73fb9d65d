"""What both exporters (transformer and tfidf-linear) share: the precision names, the
validation set the accuracy checks run on, and the latency measurement the report records."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from aiaas.core.errors import InvalidRequest
from aiaas.serving.agreement import DEFAULT_VALIDATION_TEXTS

PRECISIONS = ("auto", "fp32", "int8", "bf16")
OPSET = 17
# Enough texts to see a 1% disagreement rate; more only slows the export down.
MAX_VALIDATION_TEXTS = 1000
LATENCY_ROUNDS = 3


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InvalidRequest(
            f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.", param="precision"
        )


def validation_set(texts: list[str] | None, labels: list | None) -> tuple[list[str], list | None]:
    """The texts (and labels, if given) an export is checked on; the built-in texts when none."""
    if texts is None:
        if labels is not None:
            raise InvalidRequest("validation_labels needs validation_texts.", param="validation_labels")
        return list(DEFAULT_VALIDATION_TEXTS), None
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest(
            "validation_texts must be a non-empty list of strings.", param="validation_texts"
        )
    if labels is not None and len(labels) != len(texts):
        raise InvalidRequest(
            f"{len(labels)} validation_labels for {len(texts)} validation_texts.", param="validation_labels"
        )
    if len(texts) > MAX_VALIDATION_TEXTS:  # evenly spaced, so a sorted file still gets every class
        keep = np.linspace(0, len(texts) - 1, MAX_VALIDATION_TEXTS).astype(int)
        texts = [texts[i] for i in keep]
        labels = [labels[i] for i in keep] if labels is not None else None
    return list(texts), list(labels) if labels is not None else None


def measure_latency(predictors: dict[str, Callable[[list[str]], Any]], texts: list[str]) -> dict[str, dict]:
    """Single-text latency (p50/p95 of the best of LATENCY_ROUNDS per text) and batch throughput,
    predictors interleaved round by round so a noisy neighbour hurts every one alike."""
    single: dict[str, list[list[float]]] = {name: [] for name in predictors}
    batch: dict[str, list[float]] = {name: [] for name in predictors}
    for predict in predictors.values():  # warm-up: first runs allocate and prepack
        predict(texts[:2])
    for _ in range(LATENCY_ROUNDS):
        for name, predict in predictors.items():
            timings = []
            for text in texts:
                t0 = time.perf_counter()
                predict([text])
                timings.append(time.perf_counter() - t0)
            single[name].append(timings)
            t0 = time.perf_counter()
            predict(texts)
            batch[name].append(time.perf_counter() - t0)
    report = {}
    for name in predictors:
        best = np.min(np.array(single[name]), axis=0) * 1000.0
        report[name] = {
            "p50": round(float(np.percentile(best, 50)), 3),
            "p95": round(float(np.percentile(best, 95)), 3),
            "seq_per_s": round(len(texts) / min(batch[name]), 1),
        }
    return report


def latency_fields(latency: dict[str, dict]) -> dict[str, dict]:
    """measure_latency's result as the runtime report's `latency_ms` and `throughput_seq_s`."""
    return {
        "latency_ms": {name: {k: v for k, v in m.items() if k != "seq_per_s"} for name, m in latency.items()},
        "throughput_seq_s": {name: m["seq_per_s"] for name, m in latency.items()},
    }
