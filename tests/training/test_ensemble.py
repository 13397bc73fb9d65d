"""The ensemble candidate of auto: weight fit on validation, kept only when it beats both members,
written as one model directory, exported, and served as one model with the training labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aiaas.registry.export import export_trained_model
from aiaas.serving.ensemble import EnsemblePredictor
from aiaas.serving.runtime import load_predictor
from aiaas.training import TrainConfig, auto_plan, ensemble, families
from tests.training.conftest import SPLIT, TINY, PreparedData, Recorder
from tests.training.test_classical import chinese_data
from tests.training.test_families import word_order_data

FAST = {"learning_rate": 3e-3, "early_stopping_patience": None, "precision": "fp32"}


def mixed_data() -> PreparedData:
    """Half English word order (only the transformer reads it), half Chinese words (only the character
    n-grams read them: the tiny BERT's vocabulary has no Chinese): each member is right on its half."""
    english = word_order_data(n_train=120, n_val=60)
    chinese = chinese_data(n_train=120, n_val=60)
    rename = {"refund_first": "positive", "crash_first": "negative"}
    for ex in english.train + english.validation:
        ex.label = rename[ex.label]
    return PreparedData(
        english.task,
        english.train + chinese.train,
        english.validation + chinese.validation,
        ["negative", "positive"],
    )


def test_fit_weight_finds_the_mix_that_beats_both() -> None:
    y = np.array([0, 1] * 50)
    right, unsure = np.eye(2)[y] * 0.8 + 0.1, np.full((100, 2), 0.5)
    unsure[:, 1] += np.linspace(-0.05, 0.05, 100)  # a weak guess, half wrong
    unsure[:, 0] = 1 - unsure[:, 1]
    a = np.where(np.arange(100)[:, None] < 50, right, unsure)  # right on the first half only
    b = np.where(np.arange(100)[:, None] >= 50, right, unsure)
    w, scores, tried = ensemble.fit_weight("single_label_classification", a, b, y, ["n", "p"])
    assert 0 < w < 1 and scores["accuracy"] == 1.0 and len(tried) == len(ensemble.WEIGHTS)
    assert max(t["accuracy"] for t in tried if t["weight"] in (0.0, 1.0)) < 1.0


@pytest.mark.slow
def test_auto_keeps_the_ensemble_when_it_wins_and_serves_it_as_one_model(
    tmp_path: Path, base_models_dir: Path, monkeypatch
) -> None:
    assert ensemble.servable()  # the serving runtime loads ensembles: auto may keep one
    monkeypatch.setattr(auto_plan.readability, "UNK_SKIP", 1.0)  # half the set is unreadable on purpose
    data = mixed_data()
    rec = Recorder()
    config = TrainConfig(base_model=TINY, n_epochs=8, **FAST)
    result = families.train_family(
        "auto", config, data, tmp_path / "t", rec, base_models_dir=base_models_dir, time_budget_s=600,
        kfold=SPLIT,
    )
    selection = result.selection
    assert selection is not None
    cands = selection["candidates"]
    assert result.family == "ensemble", selection["reason"]
    assert cands.keys() == {"tfidf-linear", "transformer"}
    assert selection["ensemble"]["macro_f1"] > max(
        cands["transformer"]["macro_f1"], cands["tfidf-linear"]["macro_f1"]
    )
    meta = json.loads((result.model_dir / "aiaas.json").read_text())
    assert meta["family"] == "ensemble" and 0 < meta["weight"] < 1
    assert meta["model_selection"]["chosen"] == "ensemble"

    texts = [ex.text for ex in data.validation]
    labels = [ex.label for ex in data.validation]
    report = export_trained_model(
        result.model_dir,
        tmp_path / "onnx",
        validation_texts=texts,
        validation_labels=labels,
        precision="fp32",
    )
    assert set(report["throughput_seq_s"]) == {"ensemble", "transformer"}
    print("ensemble export:", json.dumps({k: v for k, v in report.items() if "latency" in k or "throughput" in k}))
    served = load_predictor(tmp_path / "onnx")  # what every inference route calls
    try:
        assert isinstance(served, EnsemblePredictor)
        assert served.labels == data.labels and served.info.family == "ensemble"
        got = served.predict(texts)
        assert got.shape == (len(texts), 2)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
        # The served model is as accurate as training measured, and beats each member served alone.
        truth = np.array([data.labels.index(label) for label in labels])
        accuracy = float((got.argmax(1) == truth).mean())
        assert accuracy == pytest.approx(result.metrics["accuracy"], abs=1e-9)
        for member in served.members.values():
            assert float((member.predict(texts).argmax(1) == truth).mean()) < accuracy
        assert served.count_tokens(["refund first"]) == served.members["transformer"].count_tokens(
            ["refund first"]
        )
        # The same labels as the trained members' own (torch / scikit-learn) scores, averaged by the weight.
        w = served.weight
        trained = w * ensemble.validation_probs(result.model_dir / "transformer", "transformer", texts)
        trained += (1 - w) * ensemble.validation_probs(result.model_dir / "tfidf-linear", "tfidf-linear", texts)
        np.testing.assert_allclose(got, trained, atol=1e-4)
        assert (got.argmax(1) == trained.argmax(1)).all()
        # One request through the batched path (infer, as the runtime's batcher calls it): the same scores.
        batched = served.infer(texts[:4], probabilities=True)
        np.testing.assert_allclose(batched.probabilities, got[:4], atol=1e-6)
        assert batched.token_counts == served.count_tokens(texts[:4])
    finally:
        served.close()


@pytest.mark.slow
def test_auto_records_but_does_not_keep_an_ensemble_serving_cannot_load(
    tmp_path: Path, base_models_dir: Path, monkeypatch
) -> None:
    monkeypatch.setattr(ensemble, "servable", lambda: False)
    monkeypatch.setattr(auto_plan.readability, "UNK_SKIP", 1.0)
    config = TrainConfig(base_model=TINY, n_epochs=8, **FAST)
    result = families.train_family(
        "auto", config, mixed_data(), tmp_path, Recorder(), base_models_dir=base_models_dir, time_budget_s=600,
        kfold=SPLIT,
    )
    assert result.family in ("transformer", "tfidf-linear")
    assert result.selection is not None
    assert result.selection["ensemble"]["status"].startswith("not kept: the serving runtime")
