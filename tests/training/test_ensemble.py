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
        # The same labels as the trained members' own (torch / scikit-learn) scores, averaged by the weight
        # and calibrated after combining with the temperature auto fit on the validation mix.
        assert meta["calibration"]["calibration"] == "temperature" and served.calibration is not None
        assert served.calibration["scale"] == pytest.approx([1 / meta["calibration"]["temperature"]] * 2, rel=1e-5)
        trained = ensemble.combine(
            "single_label_classification", served.weight,
            ensemble.validation_probs(result.model_dir / "transformer", "transformer", texts),
            ensemble.validation_probs(result.model_dir / "tfidf-linear", "tfidf-linear", texts),
            served.calibration,
        )  # fmt: skip
        np.testing.assert_allclose(got, trained, atol=1e-4)
        # Its validation loss is no higher than the plain average's at that weight (the temperature is fit
        # by it), and the model card's ECE is the calibrated mix's.
        plain = next(t for t in result.hyperparameters["weights_tried"] if t["weight"] == meta["weight"])
        assert selection["ensemble"]["valid_loss"] <= plain["valid_loss"] + 1e-9
        assert selection["ensemble"]["calibration"]["ece_after"] == pytest.approx(meta["metrics"]["ece"])
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


def _underconfident_mix(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose true probability of label 1 is p, served shrunk halfway to 0.5 (as averaging two
    members that disagree does): calibrated scores would be p itself."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, n)
    y = (rng.random(n) < p).astype(np.int64)
    served = 0.5 + 0.5 * (p - 0.5)
    return np.stack([1 - served, served], axis=1), y


def test_calibration_after_combining_lowers_nll_and_ece_of_an_underconfident_mix() -> None:
    from aiaas.training.calibration import ece

    task = "single_label_classification"
    mixed, y = _underconfident_mix(2000, seed=0)
    fitted, info = ensemble.fit_calibration(task, mixed, y)
    assert fitted is not None and info["calibration"] == "temperature" and info["temperature"] < 1.0
    # Judged on fresh rows from the same source, not the rows it was fit on.
    fresh, y2 = _underconfident_mix(4000, seed=1)
    after = ensemble.combine(task, 1.0, fresh, fresh, fitted)
    nll = lambda p: float(-np.log(p[np.arange(len(y2)), y2]).mean())  # noqa: E731
    assert nll(after) < nll(fresh) - 0.02
    before_ece, after_ece = ece(task, fresh, y2), ece(task, after, y2)
    assert before_ece is not None and after_ece is not None
    assert before_ece > 0.1 and after_ece < 0.03
    assert (after.argmax(1) == fresh.argmax(1)).all()  # a temperature keeps every answer


def test_fit_weight_falls_back_to_one_member_when_the_other_only_hurts() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    good = np.eye(2)[y] * 0.8 + 0.1
    noise = rng.dirichlet([0.3, 0.3], 200)  # confident and unrelated to the truth
    w, scores, _ = ensemble.fit_weight("single_label_classification", good, noise, y, ["n", "p"])
    assert w == 1.0 and scores["accuracy"] == 1.0
    w, _, _ = ensemble.fit_weight("single_label_classification", noise, good, y, ["n", "p"])
    assert w == 0.0


def test_served_combination_applies_the_calibration_and_rejects_a_malformed_one(tmp_path: Path) -> None:
    from aiaas.core.errors import InvalidFile
    from aiaas.serving.ensemble import check_calibration, combine

    a, b = np.array([[0.9, 0.1], [0.3, 0.7]]), np.array([[0.5, 0.5], [0.1, 0.9]])
    plain = combine("single_label_classification", 0.25, a, b)
    np.testing.assert_allclose(plain, 0.25 * a + 0.75 * b)
    sharper = combine("single_label_classification", 0.25, a, b, {"scale": [2.0, 2.0], "shift": [0.0, 0.0]})
    np.testing.assert_allclose(sharper, plain**2 / (plain**2).sum(axis=1, keepdims=True))
    multi = combine("multi_label_classification", 0.5, a, b, {"scale": [1.0, 1.0], "shift": [0.0, 0.0]})
    np.testing.assert_allclose(multi, 0.5 * a + 0.5 * b, atol=1e-9)
    assert check_calibration({}, 2, tmp_path) is None
    for bad in ({"scale": [1.0]}, {"scale": [1.0, 1.0], "shift": [0.0, float("nan")]}, [1, 2]):
        with pytest.raises(InvalidFile, match="'scale' and 'shift'"):
            check_calibration({"calibration": bad}, 2, tmp_path)


def test_cross_fit_fits_each_half_on_the_other_half_only(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    n = 60
    y = np.array([0, 1] * (n // 2))
    ids = np.arange(n) / 1000.0  # a row's identity, carried in its transformer scores
    p_t = np.stack([0.4 + ids, 0.6 - ids], axis=1)
    p_c = rng.dirichlet([1, 1], size=n)
    seen: list[set[float]] = []
    real = ensemble.fit_weight

    def spy(task, a, b, yy, labels):
        seen.append({round(float(v), 6) for v in a[:, 0] - 0.4})
        return real(task, a, b, yy, labels)

    monkeypatch.setattr(ensemble, "fit_weight", spy)
    out = ensemble.cross_fit_score("single_label_classification", p_t, p_c, y, ["a", "b"])
    assert out is not None and len(out["weights"]) == 2 and "macro_f1" in out
    assert len(seen) == 2 and seen[0].isdisjoint(seen[1]) and len(seen[0] | seen[1]) == n
    assert abs(len(seen[0]) - len(seen[1])) <= 2  # two halves, stratified by class
    assert ensemble.cross_fit_score("single_label_classification", p_t[:10], p_c[:10], y[:10], ["a", "b"]) is None


def test_cross_fit_does_not_reward_a_weight_searched_on_noise() -> None:
    """A member that is pure noise: searching its weight on the rows it is graded on finds a spurious gain;
    graded on the half it was not fit on, the gain is gone (on average over seeds)."""
    in_sample, crossed = [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 2, size=200)
        signal = np.where(y[:, None] == np.arange(2), 0.6, 0.4)  # a weak, real member
        p_c = np.clip(signal + rng.normal(0, 0.25, size=(200, 2)), 0.01, None)
        p_c /= p_c.sum(axis=1, keepdims=True)
        p_t = rng.dirichlet([1, 1], size=200)  # noise
        w, scores, _ = ensemble.fit_weight("single_label_classification", p_t, p_c, y, ["a", "b"])
        out = ensemble.cross_fit_score("single_label_classification", p_t, p_c, y, ["a", "b"], seed=seed)
        assert out is not None
        in_sample.append(scores["macro_f1"])
        crossed.append(out["macro_f1"])
    assert np.mean(in_sample) > np.mean(crossed) + 0.005
