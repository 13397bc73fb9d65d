"""The model card reports calibration (ECE before and after) and describes an ensemble."""

from __future__ import annotations

from aiaas.registry.card import build_card


def _card(family: str, metrics: dict, hyperparameters: dict) -> dict:
    lineage = {"family": family, "base_model": "minilm-l6", "hyperparameters": hyperparameters}
    return build_card(model_id="m", task="single_label_classification", labels=["a", "b"], lineage=lineage,
                      data_report={"n_train": 10, "n_validation": 5}, metrics=metrics, export=None)  # fmt: skip


def test_card_reports_ece_before_and_after() -> None:
    card = _card(
        "transformer",
        {"accuracy": 0.9, "ece_uncalibrated": 0.12, "ece": 0.02},
        {"calibration": "temperature", "temperature": 1.7},
    )
    assert card["calibration"] == {
        "method": "temperature",
        "ece_before": 0.12,
        "ece_after": 0.02,
        "temperature": 1.7,
    }
    assert "0.120 before, 0.020 after" in card["description"]


def test_card_without_calibration_has_no_section() -> None:
    card = _card("tfidf-linear", {"accuracy": 0.9}, {})
    assert "calibration" not in card and "calibration error" not in card["description"]


def test_card_describes_an_ensemble() -> None:
    card = _card("ensemble", {"accuracy": 0.9}, {"weight": 0.45})
    assert card["family"] == "ensemble"
    assert "weighted average (0.45 on the transformer)" in card["description"]
    assert "tfidf-linear" in card["description"]


def test_card_describes_a_charcnn_and_why_auto_chose_it() -> None:
    reason = "char-cnn macro_f1 0.9 beats tfidf-linear 0.8 (transformer skipped: its tokenizer reads 70% as [UNK])"
    lineage = {"family": "char-cnn", "base_model": "char-cnn", "hyperparameters": {},
               "model_selection": {"chosen": "char-cnn", "reason": reason}}
    card = build_card(model_id="m", task="single_label_classification", labels=["a", "b"], lineage=lineage,
                      data_report={"n_train": 10, "n_validation": 5}, metrics={"accuracy": 0.9}, export=None)
    assert card["family"] == "char-cnn" and "character CNN trained from scratch" in card["description"]
    assert "fine-tuned from" not in card["description"] and "[UNK]" in card["description"]


def test_card_says_which_rows_the_calibration_was_fit_on() -> None:
    fit_on = "125 of 250 validation rows (a stratified slice held out of epoch selection; the other 125 picked the epoch)"
    card = _card(
        "transformer",
        {"accuracy": 0.9, "ece_uncalibrated": 0.12, "ece": 0.02},
        {"calibration": "temperature", "temperature": 1.7, "fit_rows": 125, "fit_on": fit_on},
    )
    assert card["calibration"]["fit_on"] == fit_on
    assert f"fit on {fit_on}" in card["description"] and "0.120 before, 0.020 after" in card["description"]
