"""Model families and `auto`: both candidates trained for real on the tiny BERT, the better one
kept by the validation metric, the time budget planning, and the choice recorded everywhere."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from aiaas.core.errors import InvalidRequest
from aiaas.training import TrainConfig, TrainingStopped, auto, auto_plan, families
from tests.training.conftest import SPLIT, TINY, Example, PreparedData, Recorder, single_label_data
from tests.training.test_classical import chinese_data

FAST = {"n_epochs": 2, "learning_rate": 3e-3, "early_stopping_patience": None, "precision": "fp32"}


def _config(**overrides) -> TrainConfig:
    return TrainConfig(**{"base_model": TINY, **FAST, **overrides})


def word_order_data(n_train: int = 160, n_val: int = 80, seed: int = 0) -> PreparedData:
    """The label is which of two words comes first, each framed by random fillers: every word and
    n-gram is as frequent in one class as in the other, so bag-of-n-grams models are at chance."""
    rng = random.Random(seed)
    fillers = ["my", "the", "app", "order", "please", "today", "service", "card"]

    def make(n: int) -> list[Example]:
        out = []
        for _ in range(n):
            label = rng.choice(["refund_first", "crash_first"])
            a, b = ("refund", "crashes") if label == "refund_first" else ("crashes", "refund")
            f = rng.choices(fillers, k=3)
            out.append(Example(f"{f[0]} {a} {f[1]} {b} {f[2]}", label))
        return out

    return PreparedData(
        "single_label_classification", make(n_train), make(n_val), ["crash_first", "refund_first"]
    )


def test_family_for_model() -> None:
    assert families.family_for_model("tfidf-linear") == ("tfidf-linear", "tfidf-linear")
    assert families.family_for_model("auto") == ("auto", "minilm-l6")
    assert families.family_for_model("minilm-l6") == ("transformer", "minilm-l6")
    assert families.family_for_model("org/some-bert") == ("transformer", "org/some-bert")


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="tfidf-linear"):
        families.train_family("xgboost", _config(), single_label_data(), tmp_path, Recorder())


def test_single_families_record_their_name(tmp_path: Path, base_models_dir: Path) -> None:
    data = single_label_data()
    for family in ("tfidf-linear", "transformer"):
        result = families.train_family(
            family, _config(), data, tmp_path / family, Recorder(), base_models_dir=base_models_dir
        )
        assert isinstance(result, families.FamilyResult) and result.family == family
        assert json.loads((result.model_dir / "aiaas.json").read_text())["family"] == family
        assert result.model_dir == tmp_path / family / "model"


def test_auto_keeps_tfidf_when_the_transformer_cannot_read_the_text(
    tmp_path: Path, base_models_dir: Path, monkeypatch
) -> None:
    # The tiny BERT's vocabulary has no Chinese: every character becomes [UNK]. The [UNK]-rate
    # switch is off here so that both really train (tests/training/test_readability.py has it on).
    monkeypatch.setattr(auto_plan.readability, "UNK_SKIP", 1.0)
    data = chinese_data()
    rec = Recorder()
    result = families.train_family(
        "auto", _config(), data, tmp_path, rec, base_models_dir=base_models_dir, time_budget_s=600,
        kfold=SPLIT,
    )
    assert result.family == "tfidf-linear"
    selection = result.selection
    assert (
        selection is not None and selection["chosen"] == "tfidf-linear" and selection["metric"] == "macro_f1"
    )
    both = selection["candidates"]
    assert both["tfidf-linear"]["status"] == both["transformer"]["status"] == "trained"  # both really ran
    assert both["tfidf-linear"]["macro_f1"] > both["transformer"]["macro_f1"]
    assert both["transformer"]["base_model"] == TINY
    # Recorded in an event, in the winner's aiaas.json and in the hyperparameters (-> model card).
    assert any((e["data"] or {}).get("model_selection") == selection for e in rec.events)
    meta = json.loads((result.model_dir / "aiaas.json").read_text())
    assert meta["family"] == "tfidf-linear" and meta["model_selection"]["chosen"] == "tfidf-linear"
    assert result.hyperparameters["model_selection"]["candidates"].keys() == {"tfidf-linear", "transformer"}
    assert selection["ensemble"]["status"] == "not kept"  # no better than tfidf-linear alone
    assert result.model_dir == tmp_path / "tfidf-linear" / "model"
    assert (tmp_path / "transformer" / "model" / "aiaas.json").is_file()


def test_auto_keeps_the_transformer_when_word_order_decides(tmp_path: Path, base_models_dir: Path) -> None:
    data = word_order_data()
    result = families.train_family(
        "auto",
        _config(n_epochs=12, learning_rate=3e-3),
        data,
        tmp_path,
        Recorder(),
        base_models_dir=base_models_dir,
        time_budget_s=600, kfold=SPLIT,
    )
    both = result.selection["candidates"]
    assert both["tfidf-linear"]["accuracy"] < 0.7  # n-grams cannot tell the orders apart
    assert result.family == "transformer", result.selection["reason"]
    assert both["transformer"]["macro_f1"] > both["tfidf-linear"]["macro_f1"]
    meta = json.loads((result.model_dir / "aiaas.json").read_text())
    assert meta["family"] == "transformer" and meta["model_selection"]["chosen"] == "transformer"
    assert result.model_dir == tmp_path / "transformer" / "model"


def test_auto_skips_the_transformer_when_the_budget_is_spent(tmp_path: Path, base_models_dir: Path) -> None:
    rec = Recorder()
    result = families.train_family(
        "auto",
        _config(),
        single_label_data(),
        tmp_path,
        rec,
        base_models_dir=base_models_dir,
        time_budget_s=0, kfold=SPLIT,
    )
    assert result.family == "tfidf-linear"
    transformer = result.selection["candidates"]["transformer"]
    assert transformer["status"] == "skipped" and "budget" in transformer["reason"]
    assert not (tmp_path / "transformer").exists()
    assert any("transformer skipped" in e["message"] for e in rec.events)


def test_auto_stops_a_transformer_that_overruns(tmp_path: Path, base_models_dir: Path, monkeypatch) -> None:
    # An estimate far too optimistic: the run gets a limit it cannot meet and is stopped.
    fake = {
        "base_model": TINY,
        "planned_epochs": 2,
        "epoch_seconds": 1e-4,
        "fixed_seconds": 0.0,
        "estimate_seconds": 0.0,
    }
    monkeypatch.setattr(auto_plan, "estimate_transformer", lambda *a, **k: dict(fake))
    monkeypatch.setattr(auto_plan, "GRACE_S", 0.0)
    monkeypatch.setattr(auto_plan, "FIXED_S", 0.0)
    result = families.train_family(
        "auto",
        _config(),
        single_label_data(),
        tmp_path,
        Recorder(),
        base_models_dir=base_models_dir,
        time_budget_s=600, kfold=SPLIT,
    )
    assert result.family == "tfidf-linear"
    assert result.selection["candidates"]["transformer"]["status"] == "stopped"


def test_auto_passes_a_cancel_through(tmp_path: Path, base_models_dir: Path) -> None:
    # tfidf-linear asks should_stop() 5 times; the 6th ask (inside the transformer) says stop.
    with pytest.raises(TrainingStopped):
        families.train_family(
            "auto",
            _config(),
            single_label_data(),
            tmp_path,
            Recorder(stop_after_calls=5),
            base_models_dir=base_models_dir,
            time_budget_s=600, kfold=SPLIT,
        )


def test_a_rerun_reuses_the_first_plan(tmp_path: Path, base_models_dir: Path) -> None:
    data = single_label_data()
    families.train_family(
        "auto", _config(), data, tmp_path, Recorder(), base_models_dir=base_models_dir, time_budget_s=0,
        kfold=SPLIT,
    )
    # Plenty of budget the second time, but the job keeps the first attempt's plan (resumable checkpoints).
    again = families.train_family(
        "auto", _config(), data, tmp_path, Recorder(), base_models_dir=base_models_dir, time_budget_s=600,
        kfold=SPLIT,
    )
    assert again.selection["candidates"]["transformer"]["status"] == "skipped"
    assert "first attempt" in again.selection["transformer_plan"]["reason"]


def test_auto_keeps_tfidf_when_the_transformer_cannot_start(tmp_path: Path, base_models_dir: Path) -> None:
    result = families.train_family(
        "auto",
        _config(base_model="no-such-model"),
        single_label_data(),
        tmp_path,
        Recorder(),
        base_models_dir=base_models_dir,
        time_budget_s=600, kfold=SPLIT,
    )
    assert result.family == "tfidf-linear"
    transformer = result.selection["candidates"]["transformer"]
    assert transformer["status"] == "skipped" and "no-such-model" in transformer["reason"]


def test_auto_keeps_tfidf_when_the_transformer_fails(
    tmp_path: Path, base_models_dir: Path, monkeypatch
) -> None:
    def diverged(*args, **kwargs):
        raise InvalidRequest("Training diverged: the loss became nan at step 3.")

    monkeypatch.setattr(auto, "train", diverged)
    rec = Recorder()
    result = families.train_family(
        "auto",
        _config(),
        single_label_data(),
        tmp_path,
        rec,
        base_models_dir=base_models_dir,
        time_budget_s=600, kfold=SPLIT,
    )
    assert result.family == "tfidf-linear"
    transformer = result.selection["candidates"]["transformer"]
    assert transformer["status"] == "failed" and "diverged" in transformer["reason"]
    assert any(e["level"] == "warning" and "diverged" in e["message"] for e in rec.events)


@pytest.mark.parametrize(
    ("left", "run", "epochs"),
    [(1000.0, True, None), (45.0, True, 3), (15.0, False, None)],
)
def test_plan_runs_full_shortened_or_not_at_all(left: float, run: bool, epochs: int | None) -> None:
    estimate = {"planned_epochs": 5, "epoch_seconds": 10.0, "fixed_seconds": 12.0, "estimate_seconds": 1.0}
    plan = auto_plan._fit_plan(estimate, left)
    assert plan["run"] is run
    assert plan.get("n_epochs") == epochs
    if run:
        seconds = 12.0 + 10.0 * (epochs or 5)
        assert plan["hard_limit_s"] >= seconds + auto_plan.GRACE_S


def test_plan_leaves_room_for_what_follows_the_run() -> None:
    """Calibration and the ensemble's scoring run after the transformer, inside the budget: 45 s fit
    3 epochs of 10 s plus 12 s fixed, but not with 8 s after them; 25 s fit none."""
    estimate = {"planned_epochs": 5, "epoch_seconds": 10.0, "fixed_seconds": 12.0, "after_seconds": 8.0}
    plan = auto_plan._fit_plan(estimate, 45.0)
    assert plan["run"] and plan["n_epochs"] == 2 and plan["full_run_seconds"] == 12.0 + 50.0 + 8.0
    plan = auto_plan._fit_plan(estimate, 25.0)
    assert not plan["run"] and "~30 s" in plan["reason"]


def test_choose_follows_the_metric_direction() -> None:
    def cands(a: float, b: float, metric: str) -> dict:
        return {
            "tfidf-linear": {"status": "trained", metric: a},
            "transformer": {"status": "trained", metric: b},
        }

    assert auto._choose("regression", cands(2.0, 1.0, "rmse"))[0] == "transformer"  # lower rmse wins
    assert auto._choose("regression", cands(1.0, 2.0, "rmse"))[0] == "tfidf-linear"
    assert auto._choose("multi_label_classification", cands(0.5, 0.6, "micro_f1"))[0] == "transformer"
    chosen, why = auto._choose("single_label_classification", cands(0.8, 0.8, "macro_f1"))
    assert chosen == "tfidf-linear" and "ties" in why  # a tie keeps the cheaper model


def test_estimate_measures_real_steps(base_models_dir: Path) -> None:
    estimate = auto_plan.estimate_transformer(
        _config(n_epochs="auto"), single_label_data(), base_models_dir=base_models_dir
    )
    assert estimate["base_model"] == TINY and estimate["planned_epochs"] >= 3
    assert 0 < estimate["epoch_seconds"] < 60 and estimate["fixed_seconds"] >= auto_plan.FIXED_S
    assert estimate["after_seconds"] >= auto_plan.AFTER_WRITE_S
