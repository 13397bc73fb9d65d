"""auto on small data: the family is chosen by k-fold cross-validation on train + validation, the
winner refit on all rows, calibrated on out-of-fold scores; the single split above the threshold;
the time budget still holds. tfidf-linear folds run for real (no base model installed: fast); the
transformer's folds use the tiny BERT."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from aiaas.training import TrainConfig, auto_cv, auto_plan, families
from aiaas.training.classical import ClassicalModel
from tests.training.conftest import (
    TINY,
    Example,
    PreparedData,
    Recorder,
    multi_label_data,
    regression_data,
    single_label_data,
)

FAST = {"n_epochs": 2, "learning_rate": 3e-3, "early_stopping_patience": None, "precision": "fp32"}
METRIC = {"single_label_classification": "macro_f1", "multi_label_classification": "micro_f1",
          "regression": "rmse"}  # fmt: skip


def _config(task: str = "single_label_classification") -> TrainConfig:
    return TrainConfig(base_model=TINY, task=task, **FAST)


def _auto(data, tmp_path: Path, rec: Recorder, *, base_models_dir: Path | None = None, budget: float = 600,
          kfold: auto_cv.KFold | None = None, task: str | None = None):  # fmt: skip
    return families.train_family(
        "auto", _config(task or data.task), data, tmp_path, rec, base_models_dir=base_models_dir,
        time_budget_s=budget, kfold=kfold,
    )  # fmt: skip


def _fold_events(rec: Recorder, family: str) -> list[dict]:
    return [e["data"]["cv_fold"] for e in rec.events if (e["data"] or {}).get("family") == family
            and "cv_fold" in (e["data"] or {})]  # fmt: skip


# -- the folds ----------------------------------------------------------------------------------------
def test_folds_are_stratified_and_fewer_when_a_class_is_small() -> None:
    data = single_label_data()  # 96 rows, three classes
    split = auto_cv.folds(data, 5, seed=0)
    assert split is not None and split.k == 5 and len(split.rows) == 96
    sizes = np.bincount(split.fold_of)
    assert sizes.max() - sizes.min() <= 1
    for label in data.labels:
        per_fold = Counter(int(f) for r, f in zip(split.rows, split.fold_of, strict=True) if r.label == label)
        assert max(per_fold.values()) - min(per_fold.values()) <= 1 and len(per_fold) == 5
    # A class of 3 rows: 3 folds, so that every fold holds one of them out.
    rare = PreparedData(data.task, [*data.train, Example("rare one", "rare"), Example("rare two", "rare")],
                        [*data.validation, Example("rare three", "rare")], [*data.labels, "rare"])  # fmt: skip
    split = auto_cv.folds(rare, 5, seed=0)
    assert split is not None and split.k == 3
    assert sorted(int(f) for r, f in zip(split.rows, split.fold_of, strict=True) if r.label == "rare") == [0, 1, 2]
    # Same rows and seed, same folds.
    assert np.array_equal(auto_cv.folds(rare, 5, seed=0).fold_of, split.fold_of)  # type: ignore[union-attr]


def test_folds_for_regression_and_multi_label() -> None:
    split = auto_cv.folds(regression_data(), 5, seed=1)
    assert split is not None and split.method == "shuffled k-fold" and set(np.bincount(split.fold_of)) <= {19, 20}
    data = multi_label_data()
    split = auto_cv.folds(data, 5, seed=1)
    assert split is not None and "rarest label" in split.method
    for label in data.labels:  # every label is held out in every fold
        held_in = {int(f) for r, f in zip(split.rows, split.fold_of, strict=True) if label in r.label}
        assert held_in == set(range(5))
    assert auto_cv.folds(PreparedData(data.task, data.train[:3], [], data.labels), 5, seed=0) is None


# -- the choice and the refit ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make", [single_label_data, lambda: multi_label_data(n_train=48, n_val=24), regression_data],
    ids=["single_label", "multi_label", "regression"],
)
def test_auto_chooses_by_k_fold_cv_and_refits_on_all_rows(tmp_path: Path, make) -> None:
    data = make()
    task, metric = data.task, METRIC[data.task]
    rec = Recorder()
    result = _auto(data, tmp_path, rec)  # no base model here: the transformer cannot run, tfidf-linear can
    selection = result.selection
    assert selection is not None and result.family == "tfidf-linear"
    n = len(data.train) + len(data.validation)
    cv = selection["cv"]
    assert cv["status"] == "done" and cv["k"] == 5 and cv["rows"] == n and sum(cv["fold_rows"]) == n
    assert selection["scored_on"].startswith("5-fold cross-validation")

    # Five fold scores, in the events and in the record, with their mean and standard deviation.
    classic = selection["candidates"]["tfidf-linear"]
    folds = classic["cv"]["folds"]
    assert [f["fold"] for f in folds] == [1, 2, 3, 4, 5] and _fold_events(rec, "tfidf-linear") == folds
    scores = [f[metric] for f in folds]
    assert classic["cv"]["mean"][metric] == pytest.approx(statistics.fmean(scores), abs=1e-6)
    assert classic["cv"]["std"][metric] == pytest.approx(statistics.pstdev(scores), abs=1e-6)
    assert classic[metric] == classic["cv"]["mean"][metric]  # the headline score is the fold mean
    assert metric in classic["split"]  # the split model's score is kept beside it
    assert "mean ± std over 5 folds" in selection["reason"] and "refit on all" in selection["reason"]

    # The served model is the refit: all rows, the folds' settings, calibrated on out-of-fold logits.
    assert result.model_dir == tmp_path / "cv" / "refit" / "model"
    refit = result.hyperparameters["refit"]
    assert refit["rows"] == n and refit["k"] == 5 and "folds" in refit["settings"]
    meta = json.loads((result.model_dir / "aiaas.json").read_text())
    assert meta["model_selection"]["chosen"] == "tfidf-linear" and "out-of-fold" in meta["evaluation"]
    if task != "regression":
        assert result.hyperparameters["fit_on"] == "out-of-fold logits"
        assert result.metrics["ece"] <= result.metrics["ece_uncalibrated"] + 1e-12
    if task == "multi_label_classification":
        assert set(meta["thresholds"]) == set(data.labels)
    model = ClassicalModel.load(result.model_dir)
    out = model.predict([ex.text for ex in data.validation])
    assert np.isfinite(out).all() and len(out) == len(data.validation)
    # Every fit counts as trained tokens: the split's, five folds' and the refit's.
    assert result.trained_tokens == classic["trained_tokens"] > 5 * sum(len(ex.text) for ex in data.train)


def test_at_or_over_the_threshold_the_single_split_is_used(tmp_path: Path) -> None:
    data = single_label_data()
    rec = Recorder()
    result = _auto(data, tmp_path, rec, kfold=auto_cv.KFold(max_rows=96))
    cv = result.selection["cv"]
    assert cv["status"] == "off" and "auto_kfold_max_rows 96" in cv["reason"]
    assert result.selection["scored_on"] == "validation split"
    assert not _fold_events(rec, "tfidf-linear") and not (tmp_path / "cv").exists()
    assert result.model_dir == tmp_path / "tfidf-linear" / "model"  # the split model, trained on train only
    assert "cv" not in result.selection["candidates"]["tfidf-linear"]


def test_a_tiny_budget_stops_cv_and_says_so(tmp_path: Path) -> None:
    rec = Recorder()
    result = _auto(single_label_data(), tmp_path, rec, budget=1e-3)
    cv = result.selection["cv"]
    assert cv["status"] == "stopped" and "time budget" in cv["reason"]
    warned = [e["message"] for e in rec.events if e["level"] == "warning"]
    assert any("k-fold CV stopped" in m and "validation split" in m for m in warned)
    assert "k-fold CV stopped" in result.selection["reason"]
    assert result.selection["scored_on"] == "validation split"
    assert result.model_dir == tmp_path / "tfidf-linear" / "model"


# -- the transformer: k folds when they fit, the split otherwise ----------------------------------------
@pytest.mark.slow
def test_the_transformer_is_cross_validated_when_k_fits_fit(tmp_path: Path, base_models_dir: Path) -> None:
    rec = Recorder()
    result = _auto(single_label_data(), tmp_path, rec, base_models_dir=base_models_dir)
    selection = result.selection
    plan = selection["cv"]["transformer"]
    assert plan["run"] and plan["k"] == 5 and plan["seconds"] <= plan["left_seconds"]
    transformer = selection["candidates"]["transformer"]
    assert transformer["status"] == "trained" and len(transformer["cv"]["folds"]) == 5
    assert _fold_events(rec, "transformer") == transformer["cv"]["folds"]
    assert transformer["macro_f1"] == transformer["cv"]["mean"]["macro_f1"]
    # The served model is the best fold's (a fold that did not learn must never be the job's model).
    scores = [f["macro_f1"] for f in transformer["cv"]["folds"]]
    best = max(range(5), key=lambda i: scores[i])
    assert f"fold-{best + 1} model" in transformer["served"], (transformer["served"], scores)
    assert transformer["served_fold"]["macro_f1"] == pytest.approx(scores[best])
    # Both families judged on the same folds; the ensemble's weight fit on their out-of-fold scores.
    assert selection["ensemble"]["status"] in ("trained", "not kept")
    assert len(selection["ensemble"]["cv"]["folds"]) == 5
    assert "transformer" in selection["reason"] and "over 5 folds" in selection["reason"]
    assert result.trained_tokens == sum(c["trained_tokens"] for c in selection["candidates"].values())


@pytest.mark.slow
def test_the_transformer_is_scored_on_the_split_when_k_fits_do_not(
    tmp_path: Path, base_models_dir: Path, monkeypatch
) -> None:
    # One run fits the budget (2 x 100 s of 600 s), five fold fits (5 x 2 x 120 s) do not.
    fake = {"base_model": TINY, "planned_epochs": 2, "epoch_seconds": 100.0, "fixed_seconds": 0.0,
            "estimate_seconds": 0.0}  # fmt: skip
    monkeypatch.setattr(auto_plan, "estimate_transformer", lambda *a, **k: dict(fake))
    rec = Recorder()
    result = _auto(single_label_data(), tmp_path, rec, base_models_dir=base_models_dir)
    selection = result.selection
    assert not selection["cv"]["transformer"]["run"]
    assert any("transformer scored on the validation split, not by 5-fold CV" in e["message"] for e in rec.events)
    assert selection["candidates"]["transformer"]["status"] == "trained" and not _fold_events(rec, "transformer")
    assert selection["scored_on"] == "validation split"
    assert "the transformer was not cross-validated" in selection["reason"]
    if result.family == "tfidf-linear":  # tfidf-linear's folds all ran: it is still refit on all rows
        assert result.model_dir == tmp_path / "cv" / "refit" / "model"


@pytest.mark.slow
def test_a_transformer_fold_over_its_limit_falls_back_to_the_split(
    tmp_path: Path, base_models_dir: Path, monkeypatch
) -> None:
    plan_folds = auto_plan.plan_folds

    def no_time(*args, **kwargs):  # the folds fit the budget, but each gets no time at all
        return {**plan_folds(*args, **kwargs), "hard_limit_s": 0.0}

    monkeypatch.setattr(auto_plan, "plan_folds", no_time)
    rec = Recorder()
    result = _auto(single_label_data(), tmp_path, rec, base_models_dir=base_models_dir)
    selection = result.selection
    transformer = selection["candidates"]["transformer"]
    assert "time limit" in transformer["cv_stopped"] and not transformer["cv"]["folds"]
    assert transformer["status"] == "trained"  # once, on the split
    assert (tmp_path / "transformer" / "model" / "aiaas.json").is_file()
    assert any(e["level"] == "warning" and "transformer k-fold CV stopped" in e["message"] for e in rec.events)
    assert selection["scored_on"] == "validation split"
    assert "the transformer's k-fold CV stopped" in selection["reason"]
