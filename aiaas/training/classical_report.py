"""What a tfidf-linear run reports: its hyperparameters with the reason for each choice, the model
directory's aiaas.json, and the messages of its job events (aiaas.training.classical_train)."""

from __future__ import annotations

from typing import Any, Protocol

from aiaas.training.classical import (
    BOUNDARY_ID,
    CHAR_NGRAMS,
    FAMILY,
    MAX_CHARS,
    MIN_DF,
    MODEL_FILE,
    PAD_ID,
    WORD_NGRAMS,
    NgramFeaturizer,
)
from aiaas.training.config import TrainConfig


class _Grid(Protocol):
    """classical_train._Grid, as read here."""

    @property
    def model(self) -> str: ...
    @property
    def strength_name(self) -> str: ...
    @property
    def values(self) -> tuple[float, ...]: ...


class _Choice(Protocol):
    """classical_train._Choice, as read here."""

    @property
    def blocks(self) -> tuple[str, ...]: ...
    @property
    def weighting(self) -> str: ...


def hyperparameters(
    config: TrainConfig,
    grid: _Grid,
    choice: _Choice,
    featurizer: NgramFeaturizer,
    settings: dict[str, Any],
    selection_metric: str,
    *,
    validated: bool,
    fits: int,
    wall_s: float,
    search_rows: int | None,
) -> dict[str, Any]:
    """What the job reports as the model's hyperparameters, with the reason for each choice."""
    chosen_by = f"best {selection_metric} on validation" if validated else "default (no validation set)"
    sampled = f" (candidates compared on {search_rows} sampled training rows, the choice refit on all)"
    return {
        "family": FAMILY,
        **settings,
        "n_features": featurizer.n_features,
        "max_chars": MAX_CHARS,
        "seed": config.seed,
        "selection_metric": selection_metric,
        "train_seconds": round(wall_s, 3),
        "search_rows": search_rows,
        "reasons": {
            grid.strength_name: chosen_by,
            "features": f"{'+'.join(choice.blocks)} n-grams, sublinear tf-idf"
            + (", NB-weighted" if choice.weighting == "nb" else "")
            + (f": {chosen_by} among {fits} fits" if validated else "")
            + (sampled if search_rows is not None else ""),
        },
    }


def calibration_message(info: dict[str, Any]) -> str:
    how = (
        f"temperature {info['temperature']:.3g}"
        if info["calibration"] == "temperature"
        else ("Platt per label" if info["calibration"] == "platt" else info["calibration"])
    )
    return (
        f"{FAMILY} calibrated on validation and out-of-fold training scores ({info['fit_rows']} rows; {how}): "
        f"ECE {info['ece_before']:.4f} -> {info['ece_after']:.4f}"
    )


def settings(
    grid: _Grid, strength: float, featurizer: NgramFeaturizer, class_weights: bool
) -> dict[str, Any]:
    """What was chosen and fixed: in aiaas.json and in the hyperparameters (-> lineage and model card)."""
    return {
        "model": grid.model,
        grid.strength_name: strength,
        "grid": list(grid.values),
        "char_ngrams": list(CHAR_NGRAMS),
        "word_ngrams": list(WORD_NGRAMS),
        "min_df": MIN_DF,
        "features": {b.name: len(b) for b in featurizer.blocks},
        "class_weights": class_weights,
    }


def model_meta(
    task: str,
    labels: list[str],
    summary: dict[str, Any],
    best_scores: dict[str, Any],
    selection_metric: str,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The model directory's aiaas.json."""
    meta: dict[str, Any] = {
        "family": FAMILY,
        "task": task,
        "labels": labels,
        "max_length": MAX_CHARS,
        "do_lower_case": True,
        "metrics": summary,
        "base_model": FAMILY,
        "selection_metric": selection_metric,
        "classical": {
            **settings,
            "pad_token_id": PAD_ID,
            "boundary_token_id": BOUNDARY_ID,
            "model_file": MODEL_FILE,
        },
    }
    if task == "multi_label_classification":
        meta["thresholds"] = best_scores.get("thresholds") or {label: 0.5 for label in labels}
    return meta


def fit_message(record: dict[str, Any], strength_name: str) -> str:
    shown = [
        f"{k} {record[k]:.4f}"
        for k in ("accuracy", "macro_f1", "micro_f1", "rmse", "mae", "r2")
        if k in record
    ]
    return (
        ", ".join([f"{FAMILY} {strength_name} {record[strength_name]:g}", *shown])
        + f" ({record['fit_seconds']:.1f} s)"
    )
