"""The char-cnn family: trained from scratch on characters, exported to ONNX, served by the same runtime,
and auto's choice where the base model reads the text as [UNK]."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aiaas.registry.export import export_trained_model
from aiaas.serving.runtime import load_predictor
from aiaas.training import TrainConfig, auto, charcnn, charcnn_train, families, readability
from aiaas.training.charcnn_train import train_charcnn
from tests.training.conftest import SPLIT, TINY, Recorder, multi_label_data, regression_data
from tests.training.test_classical import AWKWARD, chinese_data



def _train(data, tmp_path: Path):
    config = TrainConfig(task=data.task, base_model=charcnn.FAMILY, num_threads=1, seed=3)
    return train_charcnn(config, data, tmp_path, Recorder())


@pytest.mark.parametrize("make", [chinese_data, multi_label_data, regression_data])
def test_charcnn_trains_exports_and_serves_the_same_scores(tmp_path: Path, make, monkeypatch) -> None:
    monkeypatch.setattr(charcnn_train, "MAX_EPOCHS", 10)  # enough for these sets; keeps the test fast
    data = make()
    result = _train(data, tmp_path / "train")
    meta = json.loads((result.model_dir / "aiaas.json").read_text())
    assert meta["family"] == "char-cnn" and result.hyperparameters["family"] == "char-cnn"
    if data.task == "single_label_classification":
        assert result.metrics["macro_f1"] >= 0.9  # Chinese words the tiny BERT reads as [UNK]
        assert result.metrics["ece"] <= result.metrics["ece_uncalibrated"] + 1e-9

    texts = [ex.text for ex in data.validation] + AWKWARD
    labels = [ex.label for ex in data.validation] if data.task == "single_label_classification" else None
    report = export_trained_model(result.model_dir, tmp_path / "onnx",
                                  validation_texts=texts[: len(data.validation)], validation_labels=labels)
    assert report["family"] == "char-cnn" and report["onnx_vs_torch_max_abs_diff"] <= 1e-4
    served = load_predictor(tmp_path / "onnx")  # the runtime every inference route uses
    try:
        assert served.info.family == "char-cnn" and not served.info.embeddings
        got = served.predict(texts)
        reference = charcnn.predict(result.model_dir, texts)
        np.testing.assert_allclose(got, reference, atol=1e-4, rtol=1e-4)
        if data.task == "single_label_classification":
            assert (got.argmax(1) == reference.argmax(1)).all()
            n = len(data.validation)
            truth = np.array([data.labels.index(label) for label in labels])
            assert float((got[:n].argmax(1) == truth).mean()) == pytest.approx(result.metrics["accuracy"])
        if data.task == "multi_label_classification":
            assert served.thresholds == [meta["thresholds"][label] for label in served.labels]
    finally:
        served.close()


def test_choose_compares_charcnn_with_tfidf_when_it_was_trained_instead() -> None:
    def cand(score: float) -> dict:
        return {"status": "trained", "macro_f1": score}

    skipped = {"status": "skipped", "reason": "unreadable"}
    cands = {"tfidf-linear": cand(0.8), "transformer": skipped, "char-cnn": cand(0.9)}
    assert auto._choose("single_label_classification", cands)[0] == "char-cnn"
    cands["char-cnn"] = cand(0.8)
    chosen, why = auto._choose("single_label_classification", cands)
    assert chosen == "tfidf-linear" and "ties char-cnn" in why
    cands["char-cnn"] = {"status": "failed", "reason": "x"}
    assert auto._choose("single_label_classification", cands) == (
        "tfidf-linear", "kept tfidf-linear: the char-cnn was failed"
    )


@pytest.mark.slow
def test_auto_trains_charcnn_when_the_base_model_reads_unk(
    tmp_path: Path, base_models_dir: Path, monkeypatch
) -> None:
    data = chinese_data()
    read = readability.unk_rate(TINY, [ex.text for ex in data.train], base_models_dir)
    assert read["unk_rate"] > readability.UNK_SKIP  # the tiny BERT has no Chinese
    rec = Recorder()
    result = families.train_family(
        "auto", TrainConfig(base_model=TINY, num_threads=1), data, tmp_path, rec,
        base_models_dir=base_models_dir, time_budget_s=600, kfold=SPLIT,
    )  # fmt: skip
    selection = result.selection
    assert selection is not None
    cands = selection["candidates"]
    assert cands["transformer"]["status"] == "skipped" and "[UNK]" in cands["transformer"]["reason"]
    assert "char-cnn" in cands["transformer"]["reason"]
    assert cands["char-cnn"]["status"] == "trained" and cands["char-cnn"]["macro_f1"] >= 0.9
    assert result.family == auto._choose("single_label_classification", cands)[0]
    assert "[UNK]" in selection["reason"]  # the model card's description quotes the reason
    assert any(e["message"].startswith("auto: training char-cnn") for e in rec.events)
    assert any(e["message"].startswith("char-cnn: best epoch") for e in rec.events)
    assert not (tmp_path / "transformer").exists()
    assert result.trained_tokens > 0
