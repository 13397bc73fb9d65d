"""Training the `tfidf-linear` family (aiaas.training.classical): features once, then one linear
head per regularisation strength of the grid, the best kept by the engine's selection metric."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.training import batching, components, metrics
from aiaas.training.classical import (
    ALPHA_GRID,
    BOUNDARY_ID,
    C_GRID,
    CHAR_NGRAMS,
    FAMILY,
    MAX_CHARS,
    MIN_DF,
    MODEL_FILE,
    NO_VALIDATION_ALPHA,
    NO_VALIDATION_C,
    PAD_ID,
    WORD_NGRAMS,
    ClassicalModel,
    LinearHead,
    NgramFeaturizer,
    build_tokenizer,
    encode,
    fit_head,
    score,
)
from aiaas.training.config import TrainConfig
from aiaas.training.types import PreparedDataLike, TrainCallbacks, TrainingStopped, TrainResult


def train_classical(
    config: TrainConfig, data: PreparedDataLike, work_dir: Path, callbacks: TrainCallbacks
) -> TrainResult:
    """Fit the tfidf-linear model on `data`; writes `work_dir/model` and returns its TrainResult.

    From `config` only task, seed and class_weights apply; the transformer settings
    (base model, epochs, learning rate, ...) mean nothing here. No checkpoints: a rerun
    takes seconds and gives the same model.
    """
    started = time.perf_counter()
    task = config.task
    labels = components.check_data(config, data)

    def check_stop() -> None:
        if callbacks.should_stop():
            raise TrainingStopped("Training stopped on request.")

    y_train = batching.encode_targets(task, [ex.label for ex in data.train], labels, split="train")
    y_val = batching.encode_targets(task, [ex.label for ex in data.validation], labels, split="validation")
    texts_train = [ex.text for ex in data.train]
    tokenizer = build_tokenizer(texts_train)
    ids_train = encode(tokenizer, texts_train)
    ids_val = encode(tokenizer, [ex.text for ex in data.validation])
    check_stop()
    featurizer, x_train = NgramFeaturizer.fit(ids_train, tokenizer.get_vocab_size(with_added_tokens=True))
    x_val = featurizer.transform(ids_val) if ids_val else None
    featurize_s = time.perf_counter() - started
    grid = _Grid.for_task(task, validated=x_val is not None)
    if x_val is None:
        callbacks.event("warning", "No validation examples: default regularisation, no validation metrics.")
    callbacks.event(
        "info",
        f"Training {FAMILY} ({task}) on {len(ids_train)} examples ({len(ids_val)} for validation): "
        f"{featurizer.n_features} n-gram features, "
        f"{grid.model} with {grid.strength_name} in {list(grid.values)}.",
        data={"features": {b.name: len(b) for b in featurizer.blocks}, "featurize_seconds": featurize_s},
    )

    n_out = 1 if task == "regression" else len(labels)
    fit = _Fit(config, task, labels, n_out, x_train, y_train, x_val, y_val)
    strength, head, best_scores, history = _search(grid, fit, check_stop, callbacks)

    selection_metric = metrics.SELECTION[task][0]
    summary = {k: v for k, v in best_scores.items() if k not in ("per_label", "thresholds")}
    settings = _settings(grid, strength, featurizer, config.class_weights)
    meta = _model_meta(task, labels, summary, best_scores, selection_metric, settings)
    check_stop()
    model_dir = ClassicalModel(tokenizer=tokenizer, featurizer=featurizer, head=head, meta=meta).save(
        Path(work_dir) / "model"
    )
    wall_s = time.perf_counter() - started
    callbacks.event("info", f"{FAMILY} model written after {wall_s:.1f} s.", data={"metrics": summary})
    chosen_by = (
        f"best {selection_metric} on validation" if x_val is not None else "default (no validation set)"
    )
    return TrainResult(
        model_dir=model_dir,
        metrics=best_scores,
        trained_tokens=int(sum(len(ids) for ids in ids_train)),  # characters, one pass
        steps=len(grid.values),
        epochs_completed=1.0,
        hyperparameters={
            "family": FAMILY,
            **settings,
            "n_features": featurizer.n_features,
            "max_chars": MAX_CHARS,
            "seed": config.seed,
            "selection_metric": selection_metric,
            "train_seconds": round(wall_s, 3),
            "reasons": {grid.strength_name: chosen_by, "features": "char and word n-grams, sublinear tf-idf"},
        },
        history=history,
    )


@dataclass(frozen=True)
class _Grid:
    """The regularisation strengths tried: ridge's alpha for regression, logistic regression's C
    otherwise; one default value when there is no validation set to choose with."""

    model: str
    strength_name: str
    values: tuple[float, ...]

    @classmethod
    def for_task(cls, task: str, *, validated: bool) -> _Grid:
        if task == "regression":
            return cls("ridge", "alpha", ALPHA_GRID if validated else (NO_VALIDATION_ALPHA,))
        return cls("logistic_regression", "C", C_GRID if validated else (NO_VALIDATION_C,))


@dataclass
class _Fit:
    """What every head of the grid is fitted on and scored against."""

    config: TrainConfig
    task: str
    labels: list[str]
    n_out: int
    x_train: Any
    y_train: np.ndarray
    x_val: Any | None
    y_val: np.ndarray


def _search(
    grid: _Grid, fit: _Fit, check_stop: Any, callbacks: TrainCallbacks
) -> tuple[float, LinearHead, dict[str, Any], list[dict[str, Any]]]:
    """Fit one head per strength; returns the best (strength, head, scores) and every step's record."""
    task, name = fit.task, grid.strength_name
    best: tuple[tuple[float, float], float, LinearHead, dict[str, Any]] | None = None
    history: list[dict[str, Any]] = []
    for step, strength in enumerate(grid.values, start=1):
        check_stop()
        fit_started = time.perf_counter()
        head = fit_head(
            task, fit.x_train, fit.y_train, fit.n_out, strength,
            balanced=fit.config.class_weights, seed=fit.config.seed,
        )  # fmt: skip
        fit_s = time.perf_counter() - fit_started
        scores: dict[str, Any] = (
            score(task, head.logits(fit.x_val), fit.y_val, fit.labels) if fit.x_val is not None else {}
        )
        record = {
            "split": "validation",
            "step": step,
            "epoch": 1,
            name: strength,
            "fit_seconds": round(fit_s, 3),
            **{k: v for k, v in scores.items() if k not in ("per_label", "confusion_matrix", "thresholds")},
        }
        history.append(record)
        callbacks.event("info", _message(record, name), type="metrics", data=dict(record))
        rank = metrics.selection_score(task, scores) if scores else (0.0, 0.0)
        if best is None or rank > best[0]:
            best = (rank, strength, head, scores)
    assert best is not None
    _, strength, head, best_scores = best
    return strength, head, best_scores, history


def _settings(
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


def _model_meta(
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


def _message(record: dict[str, Any], strength_name: str) -> str:
    shown = [
        f"{k} {record[k]:.4f}"
        for k in ("accuracy", "macro_f1", "micro_f1", "rmse", "mae", "r2")
        if k in record
    ]
    return (
        ", ".join([f"{FAMILY} {strength_name} {record[strength_name]:g}", *shown])
        + f" ({record['fit_seconds']:.1f} s)"
    )
