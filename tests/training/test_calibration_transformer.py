"""Transformer calibration: fit on validation logits after training, folded into the classifier
Linear, so the exported ONNX graph and the runtime serve calibrated probabilities unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aiaas.registry.export import export_trained_model
from aiaas.serving.runtime import load_predictor, softmax
from aiaas.training import TrainConfig, calibrate_transformer, families
from tests.training.conftest import TINY, Recorder, single_label_data

# One thread, so the run's numerics do not depend on the machine or the tests beside it: in one full run on the
# default threads the fit raised validation ECE, and no temperature was kept for this test to check.
FAST = {"n_epochs": 12, "learning_rate": 3e-3, "early_stopping_patience": None, "precision": "fp32",
        "num_threads": 1}
pytestmark = pytest.mark.slow


def _noisy_data():
    """Clean training labels (the tiny model learns them in 2 epochs), every 5th validation label
    flipped: a model sure of its training labels is then over-confident on validation."""
    data = single_label_data()
    for ex in data.validation[::5]:
        ex.label = "bug" if ex.label == "refund" else "refund"
    return data


def test_transformer_serves_logits_divided_by_the_fitted_temperature(
    tmp_path: Path, base_models_dir: Path, monkeypatch
) -> None:
    raw: list[np.ndarray] = []
    real = calibrate_transformer.validation_logits

    def capture(*args, **kwargs):
        raw.append(real(*args, **kwargs))
        return raw[-1]

    monkeypatch.setattr(calibrate_transformer, "validation_logits", capture)
    data = _noisy_data()
    rec = Recorder()
    config = TrainConfig(task=data.task, base_model=TINY, **FAST)
    result = families.train_family(
        "transformer", config, data, tmp_path / "t", rec, base_models_dir=base_models_dir
    )
    t = result.hyperparameters["temperature"]
    assert result.hyperparameters["calibration"] == "temperature" and t != 1.0
    meta = json.loads((result.model_dir / "aiaas.json").read_text())
    assert meta["calibration"]["temperature"] == t and meta["family"] == "transformer"
    assert meta["metrics"]["ece"] == result.metrics["ece"] <= result.metrics["ece_uncalibrated"] + 1e-9
    assert any("calibration on validation" in e["message"] for e in rec.events)

    texts = [ex.text for ex in data.validation]
    export_trained_model(result.model_dir, tmp_path / "onnx", validation_texts=texts, precision="fp32")
    served = load_predictor(tmp_path / "onnx")
    assert served.labels == data.labels
    np.testing.assert_allclose(served.predict(texts), softmax(raw[0] / t), atol=2e-4)


def test_calibration_lowers_ece_of_a_deliberately_overconfident_transformer(
    tmp_path: Path, base_models_dir: Path
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    data = _noisy_data()
    config = TrainConfig(task=data.task, base_model=TINY, **FAST)
    result = families.train_family(
        "transformer", config, data, tmp_path / "t", Recorder(), base_models_dir=base_models_dir
    )
    assert result.metrics["accuracy"] >= 0.7  # it learned; its errors are the flipped labels
    # Make it over-confident: logits x 8 (the classifier's weights and bias).
    model = AutoModelForSequenceClassification.from_pretrained(result.model_dir)
    with torch.no_grad():
        model.classifier.weight.mul_(8.0)
        model.classifier.bias.mul_(8.0)
    model.save_pretrained(result.model_dir)
    info = calibrate_transformer.calibrate(result, data.task, data, Recorder())
    assert info["temperature"] > 3.0
    assert info["ece_after"] < info["ece_before"]
    assert info["ece_before"] > 0.1
