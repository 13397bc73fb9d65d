"""Which validation rows fit a model's calibration (issue #17 item 5). By default all of them (they also
pick the epoch: a held-out slice measured no better on the bench), and the record says so; with
calibration.HOLD_OUT_SLICE on, where validation also picks the epoch kept, a stratified slice of it is
held out of that and fits the temperature / Platt instead, so the fit never sees rows that picked it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from aiaas.registry.export import export_trained_model
from aiaas.serving.runtime import load_predictor
from aiaas.training import TrainConfig, calibrate_transformer, calibration, charcnn, charcnn_train, families
from tests.training.conftest import TINY, Recorder, multi_label_data, regression_data, single_label_data
from tests.training.test_classical import chinese_data

FAST = {"n_epochs": 3, "learning_rate": 3e-3, "precision": "fp32", "num_threads": 1}


@pytest.fixture
def held_out(monkeypatch) -> None:
    monkeypatch.setattr(calibration, "HOLD_OUT_SLICE", True)


def test_split_indices_are_disjoint_stratified_deterministic() -> None:
    keys = ["a"] * 70 + ["b"] * 29 + ["c"] * 1
    select, fit = calibration.split_indices(keys, seed=7)
    assert set(select).isdisjoint(fit) and sorted([*select, *fit]) == list(range(100))
    assert len(fit) == 50
    counts = Counter(keys[i] for i in fit)
    assert abs(counts["a"] - 35) <= 1 and abs(counts["b"] - 14.5) <= 1
    again = calibration.split_indices(keys, seed=7)
    assert np.array_equal(again[0], select) and np.array_equal(again[1], fit)
    assert not np.array_equal(calibration.split_indices(keys, seed=8)[1], fit)


def test_split_for_calibration_holds_a_slice_out_of_what_train_sees(held_out) -> None:
    data = single_label_data(n_train=20, n_val=120)
    split = calibrate_transformer.split_for_calibration(TrainConfig(task=data.task, base_model=TINY), data)
    assert split.held_out and len(split.fit_index) == 60
    fit_rows = {id(data.validation[i]) for i in split.fit_index}
    assert fit_rows.isdisjoint(id(ex) for ex in split.data.validation)
    assert len(split.data.validation) == 60 and list(split.data.train) == list(data.train)
    assert "held out of epoch selection" in split.fit_on


@pytest.mark.parametrize(
    ("config", "data", "why"),
    [
        ({"n_epochs": 1}, single_label_data(n_val=120), "one epoch"),
        ({}, single_label_data(n_val=99), "too few to hold some out"),
        ({"task": "regression"}, regression_data(n_val=120), "not calibrated"),
    ],
)
def test_all_validation_rows_fit_where_nothing_is_held_out(config: dict, data, why: str, held_out) -> None:
    settings = {"task": data.task, "base_model": TINY, **config}
    split = calibrate_transformer.split_for_calibration(TrainConfig(**settings), data)
    assert not split.held_out and split.data is data and len(split.fit_index) == len(data.validation)
    assert why in split.fit_on


def test_by_default_all_validation_rows_pick_the_epoch_and_fit_and_the_record_says_so() -> None:
    data = single_label_data(n_train=20, n_val=120)
    split = calibrate_transformer.split_for_calibration(TrainConfig(task=data.task, base_model=TINY), data)
    assert not calibration.HOLD_OUT_SLICE
    assert not split.held_out and split.data is data and len(split.fit_index) == 120
    assert split.fit_on.startswith("all 120 validation rows, which also picked the epoch")


def _spy(monkeypatch, module) -> tuple[list[list[str]], list[int]]:
    """The validation texts each train() call received, and the row count each calibration fit used."""
    seen: list[list[str]] = []
    fitted: list[int] = []
    real_train, real_fit = module.train, calibrate_transformer._fit

    def train(config, data, *args, **kwargs):
        seen.append([ex.text for ex in data.validation])
        return real_train(config, data, *args, **kwargs)

    def fit(task, logits, y, n_labels):
        fitted.append(len(y))
        return real_fit(task, logits, y, n_labels)

    monkeypatch.setattr(module, "train", train)
    monkeypatch.setattr(calibrate_transformer, "_fit", fit)
    return seen, fitted


@pytest.mark.slow
def test_transformer_calibrates_on_rows_that_did_not_pick_its_epoch_and_serves_the_same_labels(
    tmp_path: Path, base_models_dir: Path, monkeypatch, held_out
) -> None:
    data = single_label_data(n_train=64, n_val=120, seed=2)
    seen, fitted = _spy(monkeypatch, families)
    rec = Recorder()
    config = TrainConfig(task=data.task, base_model=TINY, **FAST)
    result = families.train_family("transformer", config, data, tmp_path / "t", rec, base_models_dir=base_models_dir)
    hp = result.hyperparameters
    assert len(seen) == 1 and len(seen[0]) == 60 and fitted == [60]
    assert hp["fit_rows"] == 60 and "held out of epoch selection" in hp["fit_on"]
    meta = json.loads((result.model_dir / "aiaas.json").read_text())
    assert meta["calibration"]["fit_on"] == hp["fit_on"]
    assert {"ece", "ece_uncalibrated"} <= set(meta["metrics"]) and result.metrics["ece"] == meta["metrics"]["ece"]
    # The metrics are the served model's on all 120 validation rows, not the 60 that picked the epoch.
    texts = [ex.text for ex in data.validation]
    truth = np.array([data.labels.index(ex.label) for ex in data.validation])
    export_trained_model(result.model_dir, tmp_path / "onnx", validation_texts=texts, precision="fp32")
    served = load_predictor(tmp_path / "onnx")
    try:
        probs = served.predict(texts)
        assert served.labels == data.labels
        assert float((probs.argmax(1) == truth).mean()) == pytest.approx(result.metrics["accuracy"])
        assert sum(result.metrics["confusion_matrix"][0]) + sum(result.metrics["confusion_matrix"][1]) == 120
    finally:
        served.close()
    assert any("60 of 120 validation rows" in e["message"] for e in rec.events)


@pytest.mark.slow
def test_calibration_on_a_held_out_slice_lowers_ece_of_an_overconfident_transformer(
    tmp_path: Path, base_models_dir: Path, held_out
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    data = single_label_data(n_train=64, n_val=120, seed=2)
    for ex in data.validation[::5]:  # wrong labels the model cannot learn: it is over-confident on them
        ex.label = "bug" if ex.label == "refund" else "refund"
    config = TrainConfig(task=data.task, base_model=TINY, **{**FAST, "n_epochs": 12})
    result = families.train_family("transformer", config, data, tmp_path / "t", Recorder(),
                                   base_models_dir=base_models_dir)  # fmt: skip
    model = AutoModelForSequenceClassification.from_pretrained(result.model_dir)
    with torch.no_grad():  # logits x 8
        model.classifier.weight.mul_(8.0)
        model.classifier.bias.mul_(8.0)
    model.save_pretrained(result.model_dir)
    split = calibrate_transformer.split_for_calibration(config, data)
    info = calibrate_transformer.calibrate(result, data.task, data, Recorder(), split)
    assert info["fit_rows"] == 60 and info["temperature"] > 3.0
    assert info["ece_before"] > 0.1 and info["ece_after"] < info["ece_before"]


def test_charcnn_picks_its_epoch_and_fits_its_calibration_on_disjoint_rows(
    tmp_path: Path, monkeypatch, held_out
) -> None:
    monkeypatch.setattr(charcnn_train, "MAX_EPOCHS", 4)
    data = chinese_data(n_train=80, n_val=120)
    picked: list[int] = []
    fitted: list[int] = []
    real_fit, real_scaling = charcnn_train._fit, calibration.fit_scaling

    def fit(model, ids, target, task, val_texts, *args, **kwargs):
        picked.append(len(val_texts))
        return real_fit(model, ids, target, task, val_texts, *args, **kwargs)

    def scaling(task, logits, y):
        fitted.append(len(y))
        return real_scaling(task, logits, y)

    monkeypatch.setattr(charcnn_train, "_fit", fit)
    monkeypatch.setattr(calibration, "fit_scaling", scaling)
    config = TrainConfig(task=data.task, base_model=charcnn.FAMILY, num_threads=1, seed=3)
    result = charcnn_train.train_charcnn(config, data, tmp_path, Recorder())
    assert picked == [60] and fitted == [60]
    assert result.hyperparameters["fit_rows"] == 60 and "held out" in result.hyperparameters["fit_on"]
    truth = np.array([data.labels.index(ex.label) for ex in data.validation])
    probs = charcnn.predict(result.model_dir, [ex.text for ex in data.validation])
    assert float((probs.argmax(1) == truth).mean()) == pytest.approx(result.metrics["accuracy"])


def test_multi_label_slice_is_stratified_by_rarest_label(held_out) -> None:
    data = multi_label_data(n_train=10, n_val=150)
    held = calibration.held_out_slice(data.task, data.validation, seed=0)
    assert held is not None
    select, fit = held
    assert len(fit) == 75 and set(select).isdisjoint(fit)


@pytest.mark.slow
def test_auto_calibrates_its_transformer_on_a_held_out_slice(
    tmp_path: Path, base_models_dir: Path, monkeypatch, held_out
) -> None:
    from aiaas.training import auto, auto_cv

    data = single_label_data(n_train=64, n_val=120, seed=2)
    seen, fitted = _spy(monkeypatch, auto)
    config = TrainConfig(task=data.task, base_model=TINY, **FAST)
    result = families.train_family("auto", config, data, tmp_path, Recorder(), base_models_dir=base_models_dir,
                                   time_budget_s=600, kfold=auto_cv.KFold(max_rows=0))  # fmt: skip
    assert [len(v) for v in seen] == [60] and fitted == [60]
    candidate = result.selection["candidates"]["transformer"]
    assert candidate["status"] == "trained"
    # Judged against tfidf-linear on the same 120 validation rows: the served model's scores on all of them.
    assert 0.0 <= candidate["accuracy"] <= 1.0 and "ece" in candidate


@pytest.mark.slow
def test_k_fold_transformer_picks_with_part_of_its_fold_and_calibrates_with_the_rest(
    tmp_path: Path, base_models_dir: Path, monkeypatch, held_out
) -> None:
    from aiaas.training import auto_cv, auto_kfold

    data = single_label_data(n_train=400, n_val=100, seed=4)  # 500 rows, 5 folds of 100 held out
    seen, fitted = _spy(monkeypatch, auto_kfold)
    config = TrainConfig(task=data.task, base_model=TINY, **{**FAST, "n_epochs": 2})
    result = families.train_family("auto", config, data, tmp_path, Recorder(), base_models_dir=base_models_dir,
                                   time_budget_s=3600, kfold=auto_cv.KFold())  # fmt: skip
    assert result.selection["cv"]["transformer"]["run"], result.selection["cv"]
    # Each fold trains on 400 rows; 50 of its 100 held-out rows pick the epoch, the other 50 fit the temperature.
    assert [len(v) for v in seen] == [50] * 5 and fitted == [50] * 5


def test_charcnn_by_default_fits_on_all_validation_rows_and_records_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(charcnn_train, "MAX_EPOCHS", 2)
    data = chinese_data(n_train=40, n_val=120)
    config = TrainConfig(task=data.task, base_model=charcnn.FAMILY, num_threads=1, seed=3)
    result = charcnn_train.train_charcnn(config, data, tmp_path, Recorder())
    assert result.hyperparameters["fit_rows"] == 120
    assert result.hyperparameters["fit_on"] == "all 120 validation rows, which also picked the epoch"
