"""Test-split scores of one trained model directory: accuracy, macro-F1, ECE, and int8 against fp32.

What is scored is what the platform serves: the calibrated probabilities of each family's
trained directory (tfidf-linear and char-cnn: their own predict; the transformer: its HF
directory with the calibration folded into the head), and for the ensemble the weighted
average of both members' probabilities with the weight auto fit on validation, then the
calibration auto fit on that mix. ECE before calibration is each family's with its temperature
undone (the logits times T), the ensemble's plain mix, and the validation figures each family
recorded in its aiaas.json. Each ECE comes with its noise floor (`ece_floor`).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.training.common import accuracy_and_f1

TASK = "single_label_classification"
FLOOR_DRAWS = 200


def probabilities(family: str, model_dir: Path, texts: list[str]) -> np.ndarray:
    """[N, C] served probabilities of a trained family directory."""
    if family == "char-cnn":
        from aiaas.training import charcnn

        return charcnn.predict(model_dir, texts)
    from aiaas.training.ensemble import validation_probs

    return validation_probs(model_dir, family, texts)


def _meta(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / "aiaas.json"
    return json.loads(path.read_text()) if path.exists() else {}


def uncalibrated(probs: np.ndarray, meta: dict[str, Any]) -> np.ndarray | None:
    """The probabilities before temperature scaling, where a temperature was folded in."""
    # The transformer and char-cnn record it under "calibration", tfidf-linear under "classical".
    t = (meta.get("calibration") or {}).get("temperature") or (meta.get("classical") or {}).get("temperature")
    if not t:
        return None
    z = np.log(np.clip(probs, 1e-12, 1.0)) * float(t)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def ece_floor(probs: np.ndarray, draws: int = FLOOR_DRAWS, seed: int = 0) -> dict[str, float]:
    """The ECE estimator's noise floor at these scores: the ECE (same function, same bins) of a perfectly
    calibrated model with exactly these top-label confidences on the same number of rows, where each
    row's top label is right with probability equal to its confidence (drawn `draws` times; median and
    95th percentile). An ECE near the median is what a calibrated model scores here."""
    from aiaas.training.calibration import ece

    rng = np.random.default_rng(seed)
    top = probs.argmax(axis=1)
    other = (top + 1) % probs.shape[1]  # any label but the top one: a miss
    conf = probs.max(axis=1)
    values = [
        float(ece(TASK, probs, np.where(rng.random(len(conf)) < conf, top, other)) or 0.0) for _ in range(draws)
    ]
    return {"median": round(float(np.median(values)), 4), "p95": round(float(np.percentile(values, 95)), 4)}


def scores(probs: np.ndarray, truth: np.ndarray, n_labels: int, meta: dict[str, Any] | None = None) -> dict:
    """Accuracy, macro-F1, ECE and its noise floor on the test split (ECE before calibration where
    recoverable)."""
    from aiaas.training.calibration import ece

    acc, f1 = accuracy_and_f1(probs.argmax(axis=1), truth, n_labels)
    out: dict[str, Any] = {"accuracy": round(acc, 4), "macro_f1": round(f1, 4), "test_rows": len(truth)}
    out["ece"] = round(float(ece(TASK, probs, truth) or 0.0), 4)
    out["ece_floor"] = ece_floor(probs)
    raw = uncalibrated(probs, meta or {})
    if raw is not None:
        out["ece_uncalibrated"] = round(float(ece(TASK, raw, truth) or 0.0), 4)
    recorded = (meta or {}).get("metrics") or {}
    if "ece" in recorded:
        out["validation_ece"] = {k: recorded.get(k) for k in ("ece_uncalibrated", "ece") if k in recorded}
    return out


def ensemble_scores(probs: dict[str, np.ndarray], weight: float, calibrated: dict[str, Any] | None,
                    truth: np.ndarray, n_labels: int) -> dict[str, Any]:  # fmt: skip
    """The ensemble as served (aiaas.serving.ensemble.combine: the weighted mix, then the calibration
    auto fit on it), and the ECE of the plain mix before that calibration."""
    from aiaas.serving.ensemble import combine
    from aiaas.training.calibration import ece

    first, second = probs["transformer"], probs["tfidf-linear"]
    out = scores(combine(TASK, weight, first, second, calibrated), truth, n_labels)
    if calibrated:
        out["ece_uncalibrated"] = round(float(ece(TASK, combine(TASK, weight, first, second), truth) or 0.0), 4)
    return out


def family_scores(family: str, model_dir: Path, texts: list[str], truth: np.ndarray, n_labels: int) -> tuple[dict, np.ndarray]:
    started = time.perf_counter()
    probs = probabilities(family, model_dir, texts)
    out = scores(probs, truth, n_labels, _meta(model_dir))
    out["predict_s"] = round(time.perf_counter() - started, 1)
    return out, probs


def int8_against_fp32(model_dir: Path, val_texts: list[str], val_labels: list[str], texts: list[str],
                      truth: np.ndarray, n_labels: int) -> dict[str, Any]:  # fmt: skip
    """Export the transformer as the platform does with int8 requested; test accuracy of both graphs.

    When the export's accuracy guard rejects int8 the artifact keeps fp32 only, and that is
    what is served: recorded as such, with the guard's reason."""
    from aiaas.registry.export import export_model
    from aiaas.serving.runtime import load_predictor

    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        out = Path(tmp) / "artifact"
        started = time.perf_counter()
        report = export_model(
            model_dir, out, validation_texts=val_texts, validation_labels=val_labels, precision="int8"
        )
        result: dict[str, Any] = {
            "served_precision": report["precision"],
            "reason": report["reason"],
            "export_s": round(time.perf_counter() - started, 1),
        }
        for precision in ("fp32", "int8"):
            if precision != "fp32" and report["precision"] != precision:
                continue
            predictor = load_predictor(out, precision=precision)
            probs = np.concatenate([predictor.predict(texts[i : i + 64]) for i in range(0, len(texts), 64)])
            result[precision] = round(accuracy_and_f1(probs.argmax(axis=1), truth, n_labels)[0], 4)
        if "int8" in result:
            result["int8_minus_fp32_points"] = round(100 * (result["int8"] - result["fp32"]), 2)
        return result
