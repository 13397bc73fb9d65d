"""Model outputs into answers: classification results, trimmed embeddings, OIP output tensors.

One multi-label rule for every route: a label is chosen when its probability is >= its
threshold (as training tuned and scored them, training/metrics.py), the thresholds being the
model card's, else the artifact's, else 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aiaas.core.errors import InvalidRequest
from aiaas.serving import oip_codec as codec
from aiaas.serving.interface import EMBEDDING, MULTI_LABEL, REGRESSION, ModelInfo

DEFAULT_THRESHOLD = 0.5


def thresholds_for(n_labels: int, *candidates: Sequence[float] | None) -> np.ndarray:
    """The first candidate given (card, then artifact), else DEFAULT_THRESHOLD for every label."""
    for candidate in candidates:
        if candidate:
            if len(candidate) != n_labels:
                raise ValueError(f"{len(candidate)} thresholds for {n_labels} labels")
            return np.asarray(candidate, dtype=np.float64)
    return np.full(n_labels, DEFAULT_THRESHOLD)


def chosen(rows: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """[N, C] booleans: which labels each multi-label row is tagged with."""
    return rows >= thresholds


def classification_results(info: ModelInfo, scores: np.ndarray, *, top_k: int | None,
                           thresholds: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """One result per input: label + score + top-k for classifiers, label set for multi-label, value for regression."""
    if info.task == REGRESSION:
        return [{"value": float(row[0])} for row in scores]
    labels = info.labels
    k = min(top_k or len(labels), len(labels))
    multi = info.task == MULTI_LABEL
    tagged = chosen(scores, thresholds_for(len(labels), thresholds, info.thresholds)) if multi else None
    out: list[dict[str, Any]] = []
    for n, row in enumerate(scores):
        order = np.argsort(-row)
        ranked = [{"label": labels[i], "score": float(row[i])} for i in order[:k]]
        if tagged is not None:
            out.append({"labels": [labels[i] for i in np.flatnonzero(tagged[n])], "scores": ranked})
        else:
            out.append({"label": labels[order[0]], "score": float(row[order[0]]), "scores": ranked})
    return out


def trim_embeddings(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """The first `dimensions` components, L2-normalised again (OpenAI's `dimensions`)."""
    if dimensions is None:
        return vectors
    if dimensions > vectors.shape[1]:
        raise InvalidRequest(f"dimensions must be at most {vectors.shape[1]} for this model.", param="dimensions")
    vectors = vectors[:, :dimensions]
    normalised: np.ndarray = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return normalised


def output_tensors(task: str, info: ModelInfo, rows: np.ndarray,
                   thresholds: Sequence[float] | None = None) -> list[codec.Tensor]:
    """OIP outputs: `embeddings` [N, H]; `value` [N] for regression; `label` [N] + `scores` [N, C] otherwise
    (a multi-label row's label is its chosen labels joined by '|')."""
    n = rows.shape[0]
    if task == EMBEDDING:
        return [codec.Tensor("embeddings", "FP32", tuple(rows.shape), rows.astype(np.float32))]
    if task == REGRESSION:
        return [codec.Tensor("value", "FP32", (n,), rows[:, 0].astype(np.float32))]
    labels = info.labels
    if task == MULTI_LABEL:
        tagged = chosen(rows, thresholds_for(len(labels), thresholds, info.thresholds))
        names = ["|".join(labels[j] for j in np.flatnonzero(r)) for r in tagged]
    else:
        names = [labels[int(i)] for i in rows.argmax(axis=1)]
    label_arr = np.array([s.encode() for s in names], dtype=object)
    return [codec.Tensor("label", codec.BYTES, (n,), label_arr),
            codec.Tensor("scores", "FP32", tuple(rows.shape), rows.astype(np.float32))]


def select_outputs(outputs: list[codec.Tensor], requested: Sequence[codec.RequestedOutput]) -> list[codec.Tensor]:
    """The outputs a request names, in its order (all of them when it names none)."""
    if not requested:
        return outputs
    known = {t.name: t for t in outputs}
    unknown = [o.name for o in requested if o.name not in known]
    if unknown:
        raise InvalidRequest(f"Unknown output(s) {unknown}; this model has: {', '.join(known)}.")
    return [known[o.name] for o in requested]


def texts_of(req: codec.InferRequest) -> list[str]:
    """The `text` input (BYTES, [N] or [N, 1]) as strings."""
    tensor = req.input("text")
    if tensor is None:
        names = ", ".join(t.name for t in req.inputs)
        raise InvalidRequest(f"Input 'text' (BYTES, shape [N]) is required; got: {names}.")
    if tensor.datatype != codec.BYTES:
        raise InvalidRequest(f"Input 'text' must have datatype BYTES, not {tensor.datatype}.")
    if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise InvalidRequest(f"Input 'text' must have shape [N] or [N, 1], not {list(tensor.shape)}.")
    texts = []
    for i, item in enumerate(tensor.data.reshape(-1)):
        try:
            texts.append(item.decode("utf-8") if isinstance(item, bytes | bytearray) else str(item))
        except UnicodeDecodeError:
            raise InvalidRequest(f"Input 'text' element {i} is not valid UTF-8.") from None
    return texts
