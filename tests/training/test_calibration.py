"""Calibration: ECE, temperature (single-label) and per-label Platt (multi-label) fits lower it on a
deliberately over-confident model, and tfidf-linear serves the calibrated scores from its graph."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from aiaas.registry.export import export_classical_model
from aiaas.serving.runtime import load_predictor, sigmoid, softmax
from aiaas.training import TrainConfig, calibration, classical
from aiaas.training.classical_train import train_classical
from tests.training.conftest import Recorder, single_label_data


def _overconfident(n: int = 2000, k: int = 4, scale: float = 6.0, seed: int = 0):
    """Labels drawn from softmax(z); the model reports scale * z: right ranking, far too sure."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k))
    p = softmax(z)
    y = np.array([rng.choice(k, p=row) for row in p])
    return z * scale, y


def test_ece_is_zero_for_a_calibrated_model_and_large_for_an_overconfident_one() -> None:
    logits, y = _overconfident(n=20_000, scale=1.0)  # enough rows that sampling noise stays small
    assert calibration.ece("single_label_classification", softmax(logits), y) < 0.02
    logits, y = _overconfident(scale=6.0)
    assert calibration.ece("single_label_classification", softmax(logits), y) > 0.15
    assert calibration.ece("regression", np.zeros((3, 1)), np.zeros(3)) is None


def test_temperature_lowers_ece_of_an_overconfident_model() -> None:
    logits, y = _overconfident(scale=6.0)
    t = calibration.fit_temperature(logits, y)
    assert 4.5 < t < 7.5  # recovers the scale it was inflated by
    before = calibration.ece("single_label_classification", softmax(logits), y)
    after = calibration.ece("single_label_classification", softmax(logits / t), y)
    assert after < 0.03 < before
    assert (softmax(logits / t).argmax(1) == softmax(logits).argmax(1)).all()


def test_platt_per_label_lowers_ece_and_keeps_each_labels_ranking() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3000, 3)) * np.array([1.0, 2.0, 0.5]) + np.array([0.0, -1.0, 0.5])
    y = (rng.random(z.shape) < sigmoid(z)).astype(np.float32)
    logits = 5.0 * z - 1.0  # over-confident and shifted
    a, c = calibration.fit_platt(logits, y)
    fixed = logits * a + c
    before = calibration.ece("multi_label_classification", sigmoid(logits), y)
    after = calibration.ece("multi_label_classification", sigmoid(fixed), y)
    assert after < 0.03 < before
    assert (a > 0).all()


def test_tfidf_linear_reports_ece_before_and_after_and_serves_calibrated_scores(tmp_path: Path) -> None:
    """Label noise makes a high-C logistic regression over-confident; the calibrated head has lower
    validation ECE, both are in the metrics and aiaas.json, and the graph serves the calibrated head."""
    data = single_label_data()
    rng = random.Random(3)
    for ex in data.train + data.validation:
        if rng.random() < 0.25:
            ex.label = "bug" if ex.label == "refund" else "refund"
    result = train_classical(TrainConfig(task=data.task, base_model=classical.FAMILY), data, tmp_path / "t",
                             Recorder())  # fmt: skip
    m = result.metrics
    assert m["ece"] < m["ece_uncalibrated"]
    assert (
        result.hyperparameters["calibration"] == "temperature"
        and result.hyperparameters["temperature"] != 1.0
    )
    meta = json.loads((result.model_dir / "aiaas.json").read_text())
    assert meta["metrics"]["ece"] == m["ece"] and meta["classical"]["ece_before"] == m["ece_uncalibrated"]
    texts = [ex.text for ex in data.validation]
    export_classical_model(result.model_dir, tmp_path / "onnx", validation_texts=texts)
    served = load_predictor(tmp_path / "onnx").predict(texts)
    truth = np.array([data.labels.index(ex.label) for ex in data.validation])
    assert abs(calibration.ece(data.task, served, truth) - m["ece"]) < 1e-4


def test_tfidf_linear_calibration_is_fit_on_out_of_fold_rows_too_when_there_are_enough(tmp_path: Path) -> None:
    """From CALIBRATION_OOF_MIN_ROWS training rows the calibration is fit and judged on validation plus
    the training set's out-of-fold logits (every row held out once); below it, on validation alone."""
    from aiaas.training import classical_train

    config = TrainConfig(task="single_label_classification", base_model=classical.FAMILY)
    for n_train, pooled in ((classical_train.CALIBRATION_OOF_MIN_ROWS, True), (64, False)):
        data = single_label_data(n_train=n_train, n_val=100, seed=1)
        rng = random.Random(5)
        for ex in data.train + data.validation:
            if rng.random() < 0.25:
                ex.label = "bug" if ex.label == "refund" else "refund"
        rec = Recorder()
        h = train_classical(config, data, tmp_path / str(n_train), rec).hyperparameters
        assert h["fit_rows"] == (n_train + 100 if pooled else 100)
        assert h["ece_after"] <= h["ece_before"]  # on those rows, or the head is kept as trained
        assert any(f"({h['fit_rows']} rows;" in e["message"] for e in rec.events)
