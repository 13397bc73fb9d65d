"""Serving an `ensemble` model (aiaas.training.ensemble) as one model: one request, one answer.

The two members read text through different tokenizers (word pieces, characters), so one
merged ONNX graph cannot take the same inputs; the ensemble is one predictor over the two
members' exported artifacts, each loaded by `runtime.load_predictor` like any model:

    artifact/aiaas.json          {"family": "ensemble", "weight", "members", "runtime": {...}}
    artifact/transformer/        the transformer member's artifact (its own precision choice)
    artifact/tfidf-linear/       the tfidf-linear member's artifact

`runtime.load_predictor` hands an artifact whose aiaas.json says family "ensemble" to
`load_ensemble`, so every route that loads a model (the in-process runtime's cache, Ray
Serve replicas, the export's check) serves it without knowing. `EnsemblePredictor` answers
what a `runtime.Predictor` answers (predict, infer, embed, count_tokens, labels, info,
close): scores are the weighted average of the members' served scores; embeddings, token
counts and [UNK] counts come from the transformer.

This module does not import the runtime (the runtime imports it): members are anything
with a Predictor's surface (`Member`), and the runtime passes its own loader in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aiaas.core.errors import InvalidFile
from aiaas.serving.interface import ModelInfo, thresholds_in_label_order

FAMILY = "ensemble"
MEMBERS = ("transformer", "tfidf-linear")  # the weight applies to the first


class Result(Protocol):
    """What a member's `infer` returns (runtime.InferenceResult)."""

    @property
    def probabilities(self) -> np.ndarray | None: ...
    @property
    def embeddings(self) -> np.ndarray | None: ...
    @property
    def token_counts(self) -> list[int]: ...
    @property
    def unknown_counts(self) -> list[int] | None: ...


class Member(Protocol):
    """A loaded member: what the ensemble uses of a runtime.Predictor."""

    precision: str
    model_file: str
    memory_bytes: int
    bucket_size: int
    outputs: frozenset[str]
    labels: list[str]

    @property
    def info(self) -> ModelInfo: ...
    @property
    def closed(self) -> bool: ...
    def predict(self, texts: list[str]) -> np.ndarray: ...
    def embed(self, texts: list[str]) -> np.ndarray: ...
    def count_tokens(self, texts: list[str]) -> list[int]: ...
    def infer(self, texts: list[str], *, probabilities: bool = True, embeddings: bool = False) -> Any: ...
    def close(self) -> None: ...


def combine(task: str, weight: float, first: np.ndarray, second: np.ndarray,
            calibration: dict[str, Any] | None = None) -> np.ndarray:  # fmt: skip
    """p = w * first + (1 - w) * second, then the calibration fit on the mix (if any): the mix's
    logits (log p for single-label, logit p per label for multi-label) times `scale` plus `shift`.
    Averaging two calibrated members is not calibrated itself (it is usually under-confident), so
    auto fits this map on the combined validation (or out-of-fold) scores; regression has none."""
    mixed = weight * np.asarray(first, dtype=np.float64) + (1 - weight) * np.asarray(second, dtype=np.float64)
    if not calibration or task == "regression":
        return mixed
    scale = np.asarray(calibration["scale"], dtype=np.float64)
    shift = np.asarray(calibration["shift"], dtype=np.float64)
    eps = 1e-7
    if task == "single_label_classification":
        z = np.log(np.clip(mixed, eps, 1.0)) * scale + shift
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        out: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return out
    p = np.clip(mixed, eps, 1 - eps)
    z = (np.log(p) - np.log1p(-p)) * scale + shift
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def check_calibration(meta: dict[str, Any], n_out: int, where: Path) -> dict[str, Any] | None:
    """The ensemble's `calibration` ({"scale": [...], "shift": [...]}, one value per output), or None."""
    cal = meta.get("calibration")
    if cal is None:
        return None
    ok = isinstance(cal, dict) and all(
        isinstance(cal.get(k), list) and len(cal[k]) == n_out
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in cal[k])
        for k in ("scale", "shift")
    )  # fmt: skip
    if not ok:
        raise InvalidFile(
            f"{where}: an ensemble's 'calibration' must hold 'scale' and 'shift', {n_out} finite numbers each."
        )
    return {"scale": list(cal["scale"]), "shift": list(cal["shift"])}


class EnsemblePredictor:
    """One model over two member predictors: p = w * p_transformer + (1 - w) * p_tfidf-linear, then the
    calibration fit on that mix (`combine`)."""

    def __init__(self, meta: dict[str, Any], members: dict[str, Member], artifact_dir: Path) -> None:
        self.meta = meta
        self.members = members
        self.weight = float(meta["weight"])
        self.task: str = meta["task"]
        self.labels: list[str] = [str(label) for label in meta.get("labels") or []]
        self.thresholds = thresholds_in_label_order(meta.get("thresholds"), self.labels)
        self.max_length = int(meta["max_length"])
        n_out = 1 if self.task == "regression" else len(self.labels)
        self.calibration = check_calibration(meta, n_out, artifact_dir)
        first, second = (members[name] for name in MEMBERS)
        for name in MEMBERS:
            if members[name].labels != self.labels:
                raise InvalidFile(
                    f"{artifact_dir}: ensemble member {name!r} has other labels than the ensemble."
                )
        self.precision = first.precision
        self.model_file = f"{MEMBERS[0]}/{first.model_file}+{MEMBERS[1]}/{second.model_file}"
        self.artifact_dir = artifact_dir
        self.memory_bytes = sum(m.memory_bytes for m in members.values())
        self.bucket_size = first.bucket_size
        self.outputs = first.outputs
        self.info = ModelInfo(
            task=self.task,
            labels=tuple(self.labels),
            thresholds=None if self.thresholds is None else tuple(self.thresholds),
            embeddings=first.info.embeddings,
            family=FAMILY,
        )

    def predict(self, texts: list[str]) -> np.ndarray:
        result = self.infer(texts, probabilities=True, embeddings=False)
        probabilities: np.ndarray = result.probabilities
        return probabilities

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.members[MEMBERS[0]].embed(texts)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self.members[MEMBERS[0]].count_tokens(texts)

    def infer(self, texts: list[str], *, probabilities: bool = True, embeddings: bool = False) -> Any:
        """The transformer's InferenceResult with its scores replaced by the weighted average."""
        first, second = (self.members[name] for name in MEMBERS)
        result = first.infer(texts, probabilities=probabilities, embeddings=embeddings)
        if not probabilities:
            return result
        mixed = combine(self.task, self.weight, result.probabilities, second.predict(texts), self.calibration)
        return dataclasses.replace(result, probabilities=mixed.astype(np.float32))

    def close(self) -> None:
        for member in self.members.values():
            member.close()

    @property
    def closed(self) -> bool:
        return all(m.closed for m in self.members.values())

    @property
    def first_token_logits(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"EnsemblePredictor(task={self.task!r}, weight={self.weight:g})"


def is_ensemble(meta: dict[str, Any]) -> bool:
    return meta.get("family") == FAMILY


def load_ensemble(
    artifact_dir: Path,
    meta: dict[str, Any],
    load_member: Callable[[Path, str | None], Member],
    *,
    precision: str | None = None,
) -> EnsemblePredictor:
    """Load both members with `load_member(dir, precision)`. A requested precision applies to the
    transformer (tfidf-linear is fp32 only). Either member failing closes the other."""
    weight = meta.get("weight")
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0.0 <= float(weight) <= 1.0:
        raise InvalidFile(f"{artifact_dir}: an ensemble's 'weight' must be a number in [0, 1].")
    members: dict[str, Member] = {}
    try:
        for name in MEMBERS:
            members[name] = load_member(artifact_dir / name, precision if name == MEMBERS[0] else None)
        return EnsemblePredictor(meta, members, artifact_dir)
    except BaseException:
        for member in members.values():
            member.close()
        raise
