"""Training the `tfidf-linear` family (aiaas.training.classical): features once, then one linear
head per candidate (n-gram blocks x weighting) and regularisation strength, the best kept by the
engine's selection metric. The candidates are compared on at most SEARCH_SAMPLE_ROWS training rows
and the choice is fitted again on all of them: the search's cost is bounded, what grows with the
rows is featurisation and a few full fits, and SEARCH_BUDGET_S no longer cuts large sets short."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.training import batching, calibration, components, metrics
from aiaas.training.classical import (
    ALPHA_GRID,
    C_GRID,
    FAMILY,
    NO_VALIDATION_ALPHA,
    NO_VALIDATION_C,
    ClassicalModel,
    LinearHead,
    NgramFeaturizer,
    encode,
    encode_training,
    fit_head,
    outputs,
    prepared_encoding,
    score,
    select_columns,
)
from aiaas.training.classical_report import (
    calibration_message,
    fit_message,
    hyperparameters,
    model_meta,
    settings,
)
from aiaas.training.config import TrainConfig
from aiaas.training.nbsvm import fit_nb_head
from aiaas.training.types import PreparedDataLike, TrainCallbacks, TrainingStopped, TrainResult

# How far past the grid's edge the strength search may go (C: x4 steps, alpha: x3 steps).
C_LIMITS = (1.0 / 64, 1024.0)
ALPHA_LIMITS = (0.01, 300.0)
# Feature weightings tried for classification: plain TF-IDF, and NB-weighted (aiaas.training.nbsvm).
WEIGHTINGS = ("tfidf", "nb")
# Training rows the candidates are compared on: above this many, a seeded sample of them (stratified by
# class for single-label), and the chosen candidate is fitted again on all rows over the strengths next to
# the sample's choice (SEARCH_SAMPLE_ROWS bounds the search's cost, the refit's grows with the rows).
SEARCH_SAMPLE_ROWS = 2_000
MIN_SAMPLE_PER_CLASS = 20
# BLAS/OpenMP threads unless TrainConfig.num_threads asks: the fits are sparse, and on 2 shared cores two
# threads cost 2-5x the CPU of one per fit at 1k rows (their barriers spin while the other is descheduled).
DEFAULT_THREADS = 1
# Seconds the search may spend before it stops trying further candidates (the first, both blocks
# with plain TF-IDF, always runs in full). Measured on a loaded 2-core host: the old 3-fit grid took
# 420 s on the tweets set, and the full search fits ~7x as many heads.
SEARCH_BUDGET_S = 120.0
# The calibration is fit on validation and on the training set's out-of-fold logits at the chosen setting
# (this many heads, each fit without its fold): validation alone is small and chose that setting among
# every fit, so the head looks better calibrated there than on new text (mr-sentences, 1,750 train rows:
# T 1.05 fit on validation, 1.31 on 1,000 test rows; test ECE 0.048 against 0.020 with the latter).
CALIBRATION_FOLDS = 3
# Under this many training rows validation alone is used: each fold's head, fit on 2/3 of a small set,
# is a weaker model than the one served, and its logits would mis-state the served head's confidence.
CALIBRATION_OOF_MIN_ROWS = 500


def train_classical(
    config: TrainConfig, data: PreparedDataLike, work_dir: Path, callbacks: TrainCallbacks
) -> TrainResult:
    """Fit the tfidf-linear model on `data`; writes `work_dir/model` and returns its TrainResult.

    From `config` only task, seed, class_weights and num_threads apply; the transformer settings
    (base model, epochs, learning rate, ...) mean nothing here. No checkpoints: a rerun
    takes seconds and gives the same model. BLAS and OpenMP run on `config.num_threads` threads,
    one unless asked (DEFAULT_THREADS).
    """
    # Loaded first: threadpoolctl limits only the thread pools of libraries already loaded (scipy's
    # L-BFGS-B brings its own OpenBLAS), and a pool left at 2 threads spins in every iteration.
    import scipy.optimize  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    threads = config.num_threads or DEFAULT_THREADS
    with threadpool_limits(limits=threads):
        result = _train(config, data, work_dir, callbacks)
    result.hyperparameters["num_threads"] = threads
    result.hyperparameters["reasons"]["num_threads"] = (
        "requested" if config.num_threads else f"default ({DEFAULT_THREADS}): sparse fits"
    )
    return result


def _train(
    config: TrainConfig, data: PreparedDataLike, work_dir: Path, callbacks: TrainCallbacks
) -> TrainResult:
    started = time.perf_counter()
    task = config.task
    labels = components.check_data(config, data)

    def check_stop() -> None:
        if callbacks.should_stop():
            raise TrainingStopped("Training stopped on request.")

    # Character ids and n-gram features, once: every head of the search is fitted on these.
    f = _featurize(task, labels, data, check_stop)
    featurize_s = time.perf_counter() - started
    validated = f.x_val is not None
    grid = _Grid.for_task(task, validated=validated)
    _announce(callbacks, task, f, grid, featurize_s)

    # The search: n-gram blocks x weighting, each over its strength grid, on at most SEARCH_SAMPLE_ROWS
    # training rows; the choice refit on all of them (its strength chosen again there); then calibrated.
    n_out = 1 if task == "regression" else len(labels)
    fit = _Fit(config, task, labels, n_out, f.x_train, f.y_train, f.x_val, f.y_val)
    sample = search_sample(task, f.y_train, config.seed) if validated else None
    searched = fit if sample is None else fit.rows(sample)
    choice, history = _search(grid, searched, f.featurizer, check_stop, callbacks)
    del searched
    fit = _chosen_columns(f, fit, choice)
    if sample is not None:
        choice = _refit(grid, fit, choice, (fit.x_train, fit.x_val), history, check_stop, callbacks)
    # The chosen blocks only: the served graph counts no n-gram the head does not use.
    featurizer = NgramFeaturizer(
        [b for b in f.featurizer.blocks if b.name in choice.blocks], f.featurizer.vocab_size
    )
    head, best_scores, calibrated = _calibrate(fit, choice, fit.x_val, fit.x_train)
    if calibrated.get("calibration"):
        callbacks.event("info", calibration_message(calibrated), data={"calibration": calibrated})

    selection_metric = metrics.SELECTION[task][0]
    summary = {k: v for k, v in best_scores.items() if k not in ("per_label", "thresholds")}
    chosen = settings(grid, choice.strength, featurizer, config.class_weights)
    chosen.update({"ngram_blocks": "+".join(choice.blocks), "weighting": choice.weighting, **calibrated})
    meta = model_meta(task, labels, summary, best_scores, selection_metric, chosen)
    check_stop()
    model_dir = ClassicalModel(tokenizer=f.tokenizer, featurizer=featurizer, head=head, meta=meta).save(
        Path(work_dir) / "model"
    )
    wall_s = time.perf_counter() - started
    callbacks.event("info", f"{FAMILY} model written after {wall_s:.1f} s.", data={"metrics": summary})
    hp = hyperparameters(config, grid, choice, featurizer, chosen, selection_metric,
                         validated=validated, fits=len(history), wall_s=wall_s,
                         search_rows=None if sample is None else len(sample))
    return TrainResult(
        model_dir=model_dir,
        metrics=best_scores,
        trained_tokens=int(sum(len(ids) for ids in f.ids_train)),  # characters, one pass
        steps=len(history),
        epochs_completed=1.0,
        hyperparameters=hp,
        history=history,
    )


@dataclass
class _Features:
    """The training and validation sets as character ids, n-gram features and encoded targets."""

    tokenizer: Any
    featurizer: NgramFeaturizer
    ids_train: list[list[int]]
    ids_val: list[list[int]]
    x_train: Any
    x_val: Any | None  # None without validation examples
    y_train: np.ndarray
    y_val: np.ndarray


def _featurize(
    task: str, labels: list[str], data: PreparedDataLike, check_stop: Callable[[], None]
) -> _Features:
    y_train = batching.encode_targets(task, [ex.label for ex in data.train], labels, split="train")
    y_val = batching.encode_targets(task, [ex.label for ex in data.validation], labels, split="validation")
    texts_train = [ex.text for ex in data.train]
    encoded = prepared_encoding(data, texts_train) or encode_training(texts_train)
    tokenizer, ids_train = encoded.tokenizer, encoded.ids
    ids_val = encode(tokenizer, [ex.text for ex in data.validation])
    check_stop()
    featurizer, x_train = NgramFeaturizer.fit(ids_train, tokenizer.get_vocab_size(with_added_tokens=True))
    x_val = featurizer.transform(ids_val) if ids_val else None
    return _Features(tokenizer, featurizer, ids_train, ids_val, x_train, x_val, y_train, y_val)


def _chosen_columns(f: _Features, fit: _Fit, choice: _Choice) -> _Fit:
    """`fit` on the chosen blocks' columns only, for the refit and the calibration; the full matrices
    are let go (at 100k rows ~400 MB, which otherwise sat beside the refit's float64 copy)."""
    columns = _columns(f.featurizer, choice.blocks)
    x_val = select_columns(f.x_val, columns) if f.x_val is not None else None
    narrowed = replace(fit, x_train=select_columns(f.x_train, columns), x_val=x_val)
    f.x_train = f.x_val = None
    return narrowed


def _announce(callbacks: TrainCallbacks, task: str, f: _Features, grid: _Grid, featurize_s: float) -> None:
    if f.x_val is None:
        callbacks.event("warning", "No validation examples: default regularisation, no validation metrics.")
    callbacks.event(
        "info",
        f"Training {FAMILY} ({task}) on {len(f.ids_train)} examples ({len(f.ids_val)} for validation): "
        f"{f.featurizer.n_features} n-gram features, "
        f"{grid.model} with {grid.strength_name} in {list(grid.values)}.",
        data={"features": {b.name: len(b) for b in f.featurizer.blocks}, "featurize_seconds": featurize_s},
    )


@dataclass(frozen=True)
class _Grid:
    """The regularisation strengths tried: ridge's alpha for regression, logistic regression's C
    otherwise; one default value when there is no validation set to choose with."""

    model: str
    strength_name: str
    values: tuple[float, ...]
    step: float  # factor between neighbours when the search goes past the grid's edge
    limits: tuple[float, float]  # and how far it may go

    @classmethod
    def for_task(cls, task: str, *, validated: bool) -> _Grid:
        if task == "regression":
            return cls(
                "ridge", "alpha", ALPHA_GRID if validated else (NO_VALIDATION_ALPHA,), 3.0, ALPHA_LIMITS
            )
        return cls("logistic_regression", "C", C_GRID if validated else (NO_VALIDATION_C,), 4.0, C_LIMITS)


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

    def rows(self, which: np.ndarray) -> _Fit:
        """The same problem on these training rows only (validation unchanged)."""
        return replace(self, x_train=self.x_train[which], y_train=self.y_train[which])


def search_sample(task: str, y: np.ndarray, seed: int) -> np.ndarray | None:
    """The training rows the search compares candidates on: None (all of them) up to SEARCH_SAMPLE_ROWS,
    else a seeded sample of that many, per class in proportion for single-label (at least
    MIN_SAMPLE_PER_CLASS rows of each class, or all of a smaller one)."""
    n = len(y)
    if n <= SEARCH_SAMPLE_ROWS:
        return None
    rng = np.random.default_rng(seed)
    if task != "single_label_classification":
        return np.sort(rng.choice(n, SEARCH_SAMPLE_ROWS, replace=False))
    picks = []
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        want = max(round(SEARCH_SAMPLE_ROWS * len(members) / n), min(len(members), MIN_SAMPLE_PER_CLASS))
        picks.append(rng.choice(members, min(want, len(members)), replace=False))
    return np.sort(np.concatenate(picks))


@dataclass
class _Budget:
    """SEARCH_BUDGET_S for the search, judged before each fit: one more fit as long as the last one
    must still end within it (checking only between candidates let one candidate's strength grid run
    on: 283 s and 475 s against 120 on news20 and Reuters R8 in the quality bench)."""

    started: float
    last_fit_s: float = 0.0

    def spent(self) -> float:
        return time.perf_counter() - self.started

    def allows_another(self) -> bool:
        return self.spent() + self.last_fit_s <= SEARCH_BUDGET_S


def _search(
    grid: _Grid, fit: _Fit, featurizer: NgramFeaturizer, check_stop: Any, callbacks: TrainCallbacks
) -> tuple[_Choice, list[dict[str, Any]]]:
    """Every candidate (n-gram blocks x weighting) over its own strength grid; the best by the
    selection metric on validation, and every fit's record. The first candidate always runs in full."""
    best: _Choice | None = None
    history: list[dict[str, Any]] = []
    budget = _Budget(time.perf_counter())
    candidates = _candidates(fit.task, featurizer, validated=fit.x_val is not None)
    for n, (blocks, weighting) in enumerate(candidates):
        columns = _columns(featurizer, blocks)
        x_train = select_columns(fit.x_train, columns)
        x_val = select_columns(fit.x_val, columns) if fit.x_val is not None else None
        tried: dict[float, tuple[float, float]] = {}
        values = list(grid.values)
        while values:
            for strength in values:
                if n and not budget.allows_another():
                    _announce_stop(callbacks, budget, candidates[n:], partial=bool(tried))
                    assert best is not None
                    return best, history
                check_stop()
                choice, record = _fit_one(fit, blocks, weighting, strength, x_train, x_val, len(history) + 1)
                budget.last_fit_s = record["fit_seconds"]
                history.append(record)
                callbacks.event(
                    "info", fit_message(record, grid.strength_name), type="metrics", data=dict(record)
                )
                tried[strength] = choice.rank
                if best is None or choice.rank > best.rank:
                    best = choice
            values = _extend(grid, tried)
    assert best is not None
    return best, history


def _refit(
    grid: _Grid, fit: _Fit, choice: _Choice, xs: tuple[Any, Any], history: list[dict[str, Any]],
    check_stop: Any, callbacks: TrainCallbacks,
) -> _Choice:  # fmt: skip
    """The sample's choice of blocks and weighting fitted on every training row, over the strengths next
    to its strength and on past the edge while the edge wins (as in the search: the metric must turn,
    here on the rows the served head is fitted on)."""
    lo, hi = grid.limits
    around = (choice.strength / grid.step, choice.strength, choice.strength * grid.step)
    values = [s for s in around if lo * (1 - 1e-9) <= s <= hi * (1 + 1e-9)]
    tried: dict[float, tuple[float, float]] = {}
    best: _Choice | None = None
    while values:
        for strength in values:
            check_stop()
            new, record = _fit_one(fit, choice.blocks, choice.weighting, strength, *xs, len(history) + 1)
            history.append(record | {"refit": True})
            callbacks.event("info", fit_message(record, grid.strength_name) + " (all rows)", type="metrics",
                            data=history[-1])  # fmt: skip
            tried[strength] = new.rank
            if best is None or new.rank > best.rank:
                best = new
        values = _extend(grid, tried)
    assert best is not None
    return best


def _announce_stop(
    callbacks: TrainCallbacks, budget: _Budget, left: list[tuple[tuple[str, ...], str]], *, partial: bool
) -> None:
    names = [f"{'+'.join(b)}/{w}" for b, w in left]
    if partial:
        names[0] += " (part of its grid)"
    callbacks.event(
        "warning",
        f"{FAMILY}: search stopped after {budget.spent():.0f} s (SEARCH_BUDGET_S {SEARCH_BUDGET_S:g}; "
        f"the last fit took {budget.last_fit_s:.1f} s); not tried: {', '.join(names)}.",
    )


def _fit_one(
    fit: _Fit, blocks: tuple[str, ...], weighting: str, strength: float, x_train: Any, x_val: Any,
    step: int,
) -> tuple[_Choice, dict[str, Any]]:  # fmt: skip
    task = fit.task
    fit_started = time.perf_counter()
    fitter = fit_nb_head if weighting == "nb" else fit_head
    head = fitter(
        task, x_train, fit.y_train, fit.n_out, strength,
        balanced=fit.config.class_weights, seed=fit.config.seed,
    )  # fmt: skip
    fit_s = time.perf_counter() - fit_started
    scores: dict[str, Any] = (
        score(task, head.logits(x_val), fit.y_val, fit.labels) if x_val is not None else {}
    )
    name = "alpha" if task == "regression" else "C"
    record = {
        "split": "validation",
        "step": step,
        "epoch": 1,
        "features": "+".join(blocks),
        "weighting": weighting,
        name: strength,
        "fit_seconds": round(fit_s, 3),
        "train_rows": x_train.shape[0],
        **{k: v for k, v in scores.items() if k not in ("per_label", "confusion_matrix", "thresholds")},
    }
    rank = metrics.selection_score(task, scores) if scores else (0.0, 0.0)
    return _Choice(rank, blocks, weighting, strength, head, scores), record


@dataclass
class _Choice:
    rank: tuple[float, float]
    blocks: tuple[str, ...]
    weighting: str
    strength: float
    head: LinearHead
    scores: dict[str, Any]


def _candidates(
    task: str, featurizer: NgramFeaturizer, *, validated: bool
) -> list[tuple[tuple[str, ...], str]]:
    """(n-gram blocks, weighting) pairs to try: both blocks, characters alone, words alone, each with
    plain TF-IDF and (classification) NB weighting. Without validation only the default."""
    present = tuple(b.name for b in featurizer.blocks)
    if not validated:
        return [(present, "tfidf")]
    sets = [present] + [(name,) for name in present if len(present) > 1]
    weightings = ("tfidf",) if task == "regression" else WEIGHTINGS
    return [(blocks, w) for blocks in sets for w in weightings]


def _columns(featurizer: NgramFeaturizer, blocks: tuple[str, ...]) -> np.ndarray:
    """X's column indices of these blocks (blocks sit side by side in featurizer order)."""
    out, start = [], 0
    for block in featurizer.blocks:
        if block.name in blocks:
            out.append(np.arange(start, start + len(block)))
        start += len(block)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _extend(grid: _Grid, tried: dict[float, tuple[float, float]]) -> list[float]:
    """The next strength past the grid's edge while the edge strictly beats every other strength
    tried on the selection metric, up to the grid's limits: the search runs until the metric
    turns or stops improving (loss alone, which keeps falling as C grows on separable data,
    does not extend it)."""
    if len(tried) < 2:
        return []
    ordered = sorted(tried)
    lo, hi = grid.limits

    def beats_the_rest(edge: float) -> bool:
        return all(tried[edge][0] > tried[s][0] + 1e-12 for s in ordered if s != edge)

    if beats_the_rest(ordered[-1]) and ordered[-1] * grid.step <= hi * (1 + 1e-9):
        return [ordered[-1] * grid.step]
    if beats_the_rest(ordered[0]) and ordered[0] / grid.step >= lo * (1 - 1e-9):
        return [ordered[0] / grid.step]
    return []


def _out_of_fold(fit: _Fit, choice: _Choice, x_train: Any) -> tuple[np.ndarray, np.ndarray]:
    """The training set's out-of-fold logits at the chosen setting (CALIBRATION_FOLDS heads), and targets."""
    fold = np.random.default_rng(fit.config.seed).permutation(len(fit.y_train)) % CALIBRATION_FOLDS
    out = np.zeros((len(fit.y_train), fit.n_out), dtype=np.float32)
    fitter = fit_nb_head if choice.weighting == "nb" else fit_head
    for k in range(CALIBRATION_FOLDS):
        held = fold == k
        head = fitter(fit.task, x_train[~held], fit.y_train[~held], fit.n_out, choice.strength,
                      balanced=fit.config.class_weights, seed=fit.config.seed)  # fmt: skip
        out[held] = head.logits(x_train[held])
    return out, fit.y_train


def _calibrate(
    fit: _Fit, choice: _Choice, x_val: Any | None, x_train: Any | None = None
) -> tuple[LinearHead, dict[str, Any], dict[str, Any]]:
    """Fold a calibration fit on validation and the training set's out-of-fold logits (`_out_of_fold`,
    where `x_train` is given) into the chosen head (aiaas.training.calibration): temperature for
    single-label, per-label Platt for multi-label; kept where it does not raise the ECE of those rows;
    scores again with it (multi-label thresholds tuned again on the calibrated probabilities, per label)."""
    task, head = fit.task, choice.head
    if x_val is None or task == "regression" or len(fit.y_val) < 2:
        return head, choice.scores, {}
    val_logits = head.logits(x_val)
    logits, y = val_logits, fit.y_val
    if x_train is not None and len(fit.y_train) >= CALIBRATION_OOF_MIN_ROWS:
        oof, y_oof = _out_of_fold(fit, choice, x_train)
        logits, y = np.concatenate([logits, oof]), np.concatenate([y, y_oof])
    before = calibration.ece(task, outputs(task, logits), y)
    if task == "single_label_classification":
        t = calibration.fit_temperature(logits, y)
        a, c = np.full(fit.n_out, 1.0 / t, dtype=np.float32), np.zeros(fit.n_out, dtype=np.float32)
        info: dict[str, Any] = {"calibration": "temperature", "temperature": round(t, 6)}
    else:
        a, c = calibration.fit_platt(logits, y)
        info = {"calibration": "platt", "platt": {"a": a.round(6).tolist(), "c": c.round(6).tolist()}}
    a32 = a.astype(np.float32)
    new = LinearHead((head.weights * a32).astype(np.float32), (head.bias * a + c).astype(np.float32))
    after = calibration.ece(task, outputs(task, logits * a + c), y)
    info["fit_rows"] = len(y)
    if before is not None and after is not None and after > before:
        # Lower NLL but higher ECE (e.g. confident on some inputs, unsure on others: one
        # temperature cannot fix both): the uncalibrated head is kept and says so.
        info = {"calibration": f"none ({info['calibration']} fit raised held-out ECE {before:.4f} -> {after:.4f})",
                "fit_rows": len(y)}  # fmt: skip
        new, after = head, before
    new_logits = val_logits if new is head else new.logits(x_val)
    scores = score(task, new_logits, fit.y_val, fit.labels)
    scores.update({"ece_uncalibrated": calibration.ece(task, outputs(task, val_logits), fit.y_val),
                   "ece": calibration.ece(task, outputs(task, new_logits), fit.y_val)})  # fmt: skip
    info.update({"ece_before": before, "ece_after": after})
    return new, scores, info
