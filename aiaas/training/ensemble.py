"""The `ensemble` candidate of auto: a weighted average of the two trained families' calibrated scores.

    p = w * p_transformer + (1 - w) * p_tfidf-linear       (probabilities, or values for regression)

w is searched on the validation set (WEIGHTS, 0 and 1 included) by the engine's selection metric,
ties to the lower validation loss; auto keeps the ensemble only when it beats both members there,
judged with each half's weight fit on the other half (`cross_fit_score`).
The average of two calibrated members is not calibrated itself (it is usually under-confident),
so the mix is calibrated again after combining (`fit_calibration`, on the same held-out scores:
temperature on log p for single-label, Platt per label on logit p for multi-label; applied by
aiaas.serving.ensemble.combine). Multi-label thresholds are tuned again per label on the
calibrated mix.

The model directory holds both members' directories unchanged and an aiaas.json naming
them and the weight:

    model/aiaas.json            {"family": "ensemble", "task", "labels", "weight", "members": {...}, ...}
    model/transformer/          the transformer's directory (calibrated head)
    model/tfidf-linear/         the tfidf-linear directory (calibrated head)

Exported by aiaas.registry.export.ensemble, served as one model by aiaas.serving.ensemble.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.serving.ensemble import FAMILY, MEMBERS, combine  # one definition: what the runtime loads
from aiaas.training import batching, calibration, metrics

META_FILE = "aiaas.json"
WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 21))


def servable() -> bool:
    """Whether the serving runtime loads ensemble artifacts (its `load_predictor` hands family "ensemble"
    to aiaas.serving.ensemble; marked SERVES_ENSEMBLES). Where it does not, auto scores the ensemble
    and records it, but does not keep it: a job must not register a model its deployments cannot load."""
    from aiaas.serving import runtime

    return bool(getattr(runtime, "SERVES_ENSEMBLES", False))


def score_probs(task: str, probs: np.ndarray, y: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """The engine's validation metrics and loss for served scores (probabilities or values)."""
    eps = 1e-7
    if task == "single_label_classification":
        p = np.clip(probs, eps, 1.0)
        loss = float(-np.log(p[np.arange(len(y)), y]).mean())
        return {"valid_loss": loss, **metrics.single_label(np.log(p), y, labels)}
    if task == "multi_label_classification":
        p = np.clip(probs, eps, 1 - eps)
        loss = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
        return {"valid_loss": loss, **metrics.multi_label(probs, y, labels)}
    pred = probs[:, 0]
    return {"valid_loss": float(((pred - y) ** 2).mean()), **metrics.regression(pred, y)}


def fit_weight(
    task: str, p_transformer: np.ndarray, p_classical: np.ndarray, y: np.ndarray, labels: list[str]
) -> tuple[float, dict[str, Any], list[dict[str, Any]]]:
    """The best w on validation, its scores, and every weight's record."""
    best: tuple[tuple[float, float], float, dict[str, Any]] | None = None
    tried = []
    for w in WEIGHTS:
        scores = score_probs(task, w * p_transformer + (1 - w) * p_classical, y, labels)
        rank = metrics.selection_score(task, scores)
        tried.append({"weight": w, **{k: v for k, v in scores.items() if isinstance(v, float)}})
        # Strictly better only: among equals the first (more tfidf-linear) stays.
        if best is None or rank > best[0]:
            best = (rank, w, scores)
    assert best is not None
    return best[1], best[2], tried


CROSS_FIT_MIN_ROWS = 40  # below this, halves too small to fit a weight on: the in-sample score is used


def cross_fit_score(
    task: str, p_transformer: np.ndarray, p_classical: np.ndarray, y: np.ndarray, labels: list[str],
    seed: int = 0,
) -> dict[str, Any] | None:  # fmt: skip
    """The mix's validation scores with each row's weight fit on the other half of the rows (two
    seeded halves, stratified by class for single-label), so that the weight search does not also
    grade itself: searched and scored on the same rows, the mix beat the transformer alone on
    validation and lost to it on test (bench/README.md, "Two sets rerun quietly"). None under
    CROSS_FIT_MIN_ROWS rows."""
    n = len(y)
    if n < CROSS_FIT_MIN_ROWS:
        return None
    rng = np.random.default_rng(seed)
    first = np.zeros(n, dtype=bool)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if task == "single_label_classification" else [
        np.arange(n)]
    for rows in groups:
        first[rng.permutation(rows)[::2]] = True
    mixed = np.empty_like(p_transformer)
    weights = []
    for part in (first, ~first):
        w, _, _ = fit_weight(task, p_transformer[~part], p_classical[~part], y[~part], labels)
        mixed[part] = w * p_transformer[part] + (1 - w) * p_classical[part]
        weights.append(w)
    return {**score_probs(task, mixed, y, labels), "weights": weights}


def _logits(task: str, probs: np.ndarray) -> np.ndarray:
    eps = 1e-7
    if task == "single_label_classification":
        return np.asarray(np.log(np.clip(probs, eps, 1.0)))
    p = np.clip(probs, eps, 1 - eps)
    return np.asarray(np.log(p) - np.log1p(-p))


def fit_calibration(task: str, mixed: np.ndarray, y: np.ndarray) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The calibration of the combined scores (`combine`'s `calibration`: scale and shift of the mix's
    logits), fit by NLL on held-out mixed scores, and its record (method, ECE before and after on
    those scores). None for regression or fewer than 2 rows. The fits never raise the NLL they were fit
    on (aiaas.training.calibration); the ECE of a few hundred rows is mostly binning noise, so it is
    recorded, not used to decide."""
    if task == "regression" or len(y) < 2:
        return None, {}
    scale, shift, info = calibration.fit_scaling(task, _logits(task, mixed), y)
    fitted = {"scale": [float(v) for v in scale], "shift": [float(v) for v in shift]}
    after = combine(task, 1.0, mixed, mixed, fitted)
    info.update({"ece_before": calibration.ece(task, mixed, y), "ece_after": calibration.ece(task, after, y)})
    return fitted, info


def calibrate_mix(
    task: str, weight: float, probs: dict[str, np.ndarray], y: np.ndarray, labels: list[str],
    scores: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:  # fmt: skip
    """The members' mix at `weight`, calibrated (`fit_calibration`) and scored again with it: its loss,
    ECE before and after, and multi-label thresholds tuned on the calibrated mix. Returns (scores,
    calibration or None, its record); `scores` (the plain mix's) unchanged where nothing is fit."""
    mixed = combine(task, weight, probs[MEMBERS[0]], probs[MEMBERS[1]])
    fitted, info = fit_calibration(task, mixed, y)
    if fitted is None:
        return scores, None, info
    rescored = score_probs(task, combine(task, 1.0, mixed, mixed, fitted), y, labels)
    rescored.update({"ece_uncalibrated": info["ece_before"], "ece": info["ece_after"]})
    return rescored, fitted, info


def validation_probs(model_dir: Path, family: str, texts: list[str]) -> np.ndarray:
    """A member's served scores on validation texts, from its trained directory."""
    if family == "tfidf-linear":
        from aiaas.training.classical import ClassicalModel

        return ClassicalModel.load(model_dir).predict(texts)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from aiaas.serving.runtime import sigmoid, softmax
    from aiaas.training.calibrate_transformer import validation_logits

    meta = json.loads((Path(model_dir) / META_FILE).read_text())
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True).to("cpu").float()  # nosec B615 - a local directory this job wrote
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)  # nosec B615 - a local directory this job wrote
    logits = validation_logits(model, tokenizer, texts, int(meta["max_length"]))
    if meta["task"] == "single_label_classification":
        return softmax(logits)
    if meta["task"] == "multi_label_classification":
        return sigmoid(logits)
    return logits


def targets(task: str, data: Any, labels: list[str]) -> np.ndarray:
    return batching.encode_targets(task, [ex.label for ex in data.validation], labels, split="validation")


def write_ensemble(
    out_dir: Path, members: dict[str, Path], *, task: str, labels: list[str], weight: float,
    scores: dict[str, Any], selection_metric: str, calibrated: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """Copy both member directories under `out_dir` and write its aiaas.json (swapped in whole)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".tmp-{out_dir.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, src in members.items():
        shutil.copytree(src, tmp / name)
    first = json.loads((Path(members[MEMBERS[0]]) / META_FILE).read_text())
    meta: dict[str, Any] = {
        "format_version": 1,
        "family": FAMILY,
        "task": task,
        "labels": labels,
        "max_length": first["max_length"],
        "base_model": first.get("base_model"),
        "selection_metric": selection_metric,
        "weight": weight,
        "members": {
            name: {"dir": name, "weight": weight if name == MEMBERS[0] else 1 - weight} for name in MEMBERS
        },
        "metrics": {k: v for k, v in scores.items() if k not in ("per_label", "thresholds")},
    }
    if calibrated is not None:
        meta["calibration"] = calibrated
    if task == "multi_label_classification":
        meta["thresholds"] = scores.get("thresholds") or {label: 0.5 for label in labels}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.rename(tmp, out_dir)
    return out_dir


def is_ensemble(model_dir: Path) -> bool:
    try:
        return json.loads((Path(model_dir) / META_FILE).read_text()).get("family") == FAMILY
    except (OSError, ValueError, AttributeError):
        return False
