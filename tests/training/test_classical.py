"""The tfidf-linear family: training for the three tasks, the model directory, and its ONNX
export served by the ordinary runtime (aiaas.serving.runtime) with no scikit-learn."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aiaas.core.errors import InvalidRequest
from aiaas.registry.export import export_classical_model, export_trained_model
from aiaas.serving.runtime import load_predictor
from aiaas.training import TrainConfig, TrainingStopped, classical
from aiaas.training.classical_train import train_classical
from tests.training.conftest import (
    Example,
    PreparedData,
    Recorder,
    multi_label_data,
    regression_data,
    single_label_data,
)

CONFIG = {"base_model": classical.FAMILY}
# Texts the n-gram counting must treat identically in numpy/scikit-learn and in ONNX.
AWKWARD = [
    "",
    "   ",
    "refund",
    "Refund!!! REFUND?? refund...",
    "the app crashes\n\twhen i open settings",
    'he said " no " , then ( maybe ) ... refund',
    "a \u2581 literal boundary\u2581 and\u00a0no-break space",
    "质量还不错，内容只适合边上厕所便消遣了",
    "emoji 😀 and ñandú and Ωmega",
    "x" * (classical.MAX_CHARS + 500),
    "money back " * 400,
]


def chinese_data(n_train: int = 80, n_val: int = 40, seed: int = 0) -> PreparedData:
    """Labels decided by which group of Chinese words a text contains."""
    rng = random.Random(seed)
    good, bad = ["质量很好", "非常满意", "物流很快", "推荐购买"], ["质量太差", "很失望", "退货麻烦", "不推荐"]
    filler = ["这本书", "昨天收到", "包装", "价格", "客服"]

    def make(n: int) -> list[Example]:
        out = []
        for _ in range(n):
            label = rng.choice(["positive", "negative"])
            words = rng.sample(good if label == "positive" else bad, 2) + rng.sample(filler, 2)
            rng.shuffle(words)
            out.append(Example("，".join(words), label))
        return out

    return PreparedData("single_label_classification", make(n_train), make(n_val), ["negative", "positive"])


def _train(data: PreparedData, tmp_path: Path, rec: Recorder | None = None):
    config = TrainConfig(task=data.task, **CONFIG)
    return train_classical(config, data, tmp_path, rec or Recorder())


def test_single_label_learns_and_writes_a_model_directory(tmp_path: Path) -> None:
    data = single_label_data()
    rec = Recorder()
    result = _train(data, tmp_path, rec)

    assert result.metrics["accuracy"] >= 0.95
    assert np.array(result.metrics["confusion_matrix"]).sum() == len(data.validation)
    assert result.model_dir == tmp_path / "model"
    assert sorted(p.name for p in result.model_dir.iterdir()) == [
        "aiaas.json",
        "tfidf_linear.npz",
        "tokenizer.json",
    ]
    meta = json.loads((result.model_dir / "aiaas.json").read_text())
    assert meta["family"] == "tfidf-linear" and meta["task"] == "single_label_classification"
    assert meta["labels"] == ["bug", "refund"]
    assert meta["metrics"]["accuracy"] == result.metrics["accuracy"]
    assert meta["selection_metric"] == "macro_f1" and meta["max_length"] == classical.MAX_CHARS
    # Plain arrays only: loading must work with pickles refused.
    with np.load(result.model_dir / "tfidf_linear.npz", allow_pickle=False) as npz:
        assert npz["weights"].shape == (sum(meta["classical"]["features"].values()), 2)
    # One validation record per candidate (blocks, weighting) and strength, the chosen one in the
    # hyperparameters; each candidate starts from the grid (tests/training/test_classical_search.py).
    evals = rec.metrics_events()
    assert [e["C"] for e in evals[: len(classical.C_GRID)]] == list(classical.C_GRID)
    assert {(e["features"], e["weighting"]) for e in evals} == {
        (f, w) for f in ("char+word", "char", "word") for w in ("tfidf", "nb")
    }
    assert any(e["C"] == result.hyperparameters["C"] for e in evals)
    assert result.hyperparameters["family"] == "tfidf-linear"
    assert result.steps == len(evals) and result.trained_tokens > 0


def test_chinese_is_learned_from_character_ngrams(tmp_path: Path) -> None:
    result = _train(chinese_data(), tmp_path)
    assert result.metrics["accuracy"] >= 0.95


def test_multi_label_tunes_one_threshold_per_label(tmp_path: Path) -> None:
    data = multi_label_data()
    result = _train(data, tmp_path)
    assert result.metrics["micro_f1"] >= 0.9
    meta = json.loads((result.model_dir / "aiaas.json").read_text())
    assert set(meta["thresholds"]) == set(data.labels)
    assert all(0.0 < t < 1.0 for t in meta["thresholds"].values())


def test_regression_uses_ridge_in_the_users_units(tmp_path: Path) -> None:
    data = regression_data()
    result = _train(data, tmp_path)
    assert result.hyperparameters["model"] == "ridge"
    spread = float(np.std([ex.label for ex in data.validation]))
    assert result.metrics["rmse"] < 0.5 * spread
    model = classical.ClassicalModel.load(result.model_dir)
    assert model.predict(["great service thank you"])[0, 0] == pytest.approx(80, abs=12)


def test_no_validation_set_uses_the_default_strength(tmp_path: Path) -> None:
    data = single_label_data()
    data.validation = []
    rec = Recorder()
    result = _train(data, tmp_path, rec)
    assert result.hyperparameters["C"] == classical.NO_VALIDATION_C
    assert any(e["level"] == "warning" for e in rec.events)


def test_stop_request_raises_training_stopped(tmp_path: Path) -> None:
    with pytest.raises(TrainingStopped):
        _train(single_label_data(), tmp_path, Recorder(stop_after_calls=1))
    assert not (tmp_path / "model").exists()


def test_unknown_validation_label_is_refused(tmp_path: Path) -> None:
    data = single_label_data()
    data.validation[0].label = "praise"
    with pytest.raises(InvalidRequest, match="praise"):
        _train(data, tmp_path)


def test_featurizer_round_trips_through_arrays(tmp_path: Path) -> None:
    result = _train(single_label_data(), tmp_path)
    model = classical.ClassicalModel.load(result.model_dir)
    again = classical.NgramFeaturizer.from_arrays(model.featurizer.to_arrays())
    ids = classical.encode(model.tokenizer, AWKWARD)
    assert (model.featurizer.transform(ids) != again.transform(ids)).nnz == 0


@pytest.mark.parametrize("make", [single_label_data, multi_label_data, regression_data, chinese_data])
def test_export_is_served_by_the_runtime_and_matches_scikit_learn(tmp_path: Path, make) -> None:
    data = make()
    result = _train(data, tmp_path / "train")
    texts = [ex.text for ex in data.validation] + AWKWARD
    report = export_classical_model(result.model_dir, tmp_path / "onnx", validation_texts=texts)

    predictor = load_predictor(tmp_path / "onnx")
    reference = classical.ClassicalModel.load(result.model_dir).predict(texts)
    got = predictor.predict(texts)
    assert got.shape == reference.shape
    np.testing.assert_allclose(got, reference, atol=1e-5, rtol=1e-5)
    assert report["onnx_vs_sklearn_max_abs_diff"] <= 1e-4
    assert predictor.task == data.task
    assert predictor.labels == (list(data.labels) if data.task != "regression" else ["value"])
    if data.task == "multi_label_classification":
        saved = json.loads((result.model_dir / "aiaas.json").read_text())["thresholds"]
        # Training records {label: threshold}; the runtime holds them as a list in label order.
        assert predictor.thresholds == (None if saved is None else [saved[label] for label in predictor.labels])
    assert set(report["latency_ms"]) == {"onnx", "sklearn"} and report["served_by"] == "onnx"
    # Characters are the tokens here: the closing boundary is one more, truncation caps it.
    counts = predictor.count_tokens(["abc", "x" * (classical.MAX_CHARS * 2)])
    assert counts == [5, classical.MAX_CHARS]
    with pytest.raises(InvalidRequest, match="embeddings"):
        predictor.infer(["abc"], probabilities=False, embeddings=True)
    assert predictor.predict([]).shape == (0, got.shape[1])


def test_single_label_export_reports_accuracy_and_dispatches_by_family(tmp_path: Path) -> None:
    data = single_label_data()
    result = _train(data, tmp_path / "train")
    texts, labels = [ex.text for ex in data.validation], [ex.label for ex in data.validation]
    report = export_trained_model(
        result.model_dir, tmp_path / "onnx", validation_texts=texts, validation_labels=labels
    )
    assert report["family"] == "tfidf-linear"
    assert (
        report["accuracy"]["fp32"]
        == report["accuracy"]["sklearn"]
        == pytest.approx(result.metrics["accuracy"])
    )
    meta = json.loads((tmp_path / "onnx" / "aiaas.json").read_text())
    assert meta["family"] == "tfidf-linear" and meta["runtime"]["file"] == "model.fp32.onnx"


def test_serving_imports_no_scikit_learn(tmp_path: Path) -> None:
    result = _train(single_label_data(), tmp_path / "train")
    export_classical_model(result.model_dir, tmp_path / "onnx")
    code = (
        "import sys; from aiaas.serving.runtime import load_predictor; "
        f"p = load_predictor({str(tmp_path / 'onnx')!r}); p.predict(['refund please']); "
        "heavy = [m for m in ('sklearn', 'scipy', 'torch', 'transformers') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
