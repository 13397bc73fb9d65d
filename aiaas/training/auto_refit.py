"""auto on small data, after k-fold CV: tfidf-linear's fold fits, and its refit on all rows.

The refit trains on every pooled row (train + validation) with the settings the folds chose
most often (n-gram blocks and weighting; the median regularisation strength among the folds
that chose them). Its calibration cannot be fit on rows it trained on, so it is fit on the
out-of-fold logits instead: each row scored by the fold model that did not train on it, with
that fold's own calibration taken off (the scheme of scikit-learn's CalibratedClassifierCV with
ensemble=False). The same out-of-fold scores give the refit model's metrics and, for
multi-label, its per-label thresholds. Nothing is held out: the export's accuracy guard only
compares the exported graph with this model on texts, which need no labels.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.training import batching, calibration, classical, metrics
from aiaas.training.auto_cv import FoldData, Folds, FoldRun, Quiet
from aiaas.training.classical import ClassicalModel, LinearHead, NgramFeaturizer, fit_head, outputs, score
from aiaas.training.classical_report import model_meta as _model_meta
from aiaas.training.classical_report import settings as _settings
from aiaas.training.classical_train import _columns, _Grid, train_classical
from aiaas.training.config import TrainConfig
from aiaas.training.nbsvm import fit_nb_head
from aiaas.training.types import TrainCallbacks, TrainResult


def classical_fold(config: TrainConfig, work_dir: Path, callbacks: TrainCallbacks) -> Any:
    """run_folds' fit for tfidf-linear: its usual training with the held-out fold as validation; the
    fold model's served scores on that fold and its logits there without the fold's calibration."""

    def fit(i: int, data: FoldData) -> tuple[TrainResult, np.ndarray, np.ndarray]:
        result = train_classical(config, data, work_dir / f"fold-{i + 1}", Quiet(callbacks))
        calibrated = ClassicalModel.load(result.model_dir).logits([ex.text for ex in data.validation])
        raw = _uncalibrated(calibrated.astype(np.float64), result.hyperparameters)
        return result, outputs(config.task, calibrated), raw

    return fit


def _uncalibrated(logits: np.ndarray, hp: dict[str, Any]) -> np.ndarray:
    """Take a fold's own calibration (folded into its head) off its logits."""
    if hp.get("calibration") == "temperature":
        return logits * float(hp["temperature"])
    if hp.get("calibration") == "platt":
        a, c = np.asarray(hp["platt"]["a"]), np.asarray(hp["platt"]["c"])
        return (logits - c) / a
    return logits


def refit_classical(
    config: TrainConfig, split: Folds, run: FoldRun, work_dir: Path, callbacks: TrainCallbacks
) -> TrainResult:
    """tfidf-linear on all pooled rows, settings from the folds, calibration from out-of-fold logits."""
    started = time.perf_counter()
    task, labels = config.task, split.labels
    assert run.oof_raw is not None
    data = split.all_rows()
    y = batching.encode_targets(task, [ex.label for ex in data.train], labels, split="train")
    blocks, weighting, strength, agreed = _consensus(task, run.results)
    texts = [ex.text for ex in data.train]
    tokenizer = classical.build_tokenizer(texts)
    ids = classical.encode(tokenizer, texts)
    featurizer, x = NgramFeaturizer.fit(ids, tokenizer.get_vocab_size(with_added_tokens=True))
    blocks = tuple(b for b in blocks if b in {blk.name for blk in featurizer.blocks}) or tuple(
        blk.name for blk in featurizer.blocks
    )
    columns = _columns(featurizer, blocks)
    fitter = fit_nb_head if weighting == "nb" else fit_head
    n_out = 1 if task == "regression" else len(labels)
    head = fitter(task, x[:, columns], y, n_out, strength, balanced=config.class_weights, seed=config.seed)
    featurizer = NgramFeaturizer([b for b in featurizer.blocks if b.name in blocks], featurizer.vocab_size)
    head, scores, info = _calibrate_oof(task, head, run.oof_raw, y, labels)
    grid = _Grid.for_task(task, validated=True)
    settings = _settings(grid, strength, featurizer, config.class_weights)
    settings.update({"ngram_blocks": "+".join(blocks), "weighting": weighting, **info})
    selection_metric = metrics.SELECTION[task][0]
    summary = {k: v for k, v in scores.items() if k not in ("per_label", "thresholds")}
    meta = _model_meta(task, labels, summary, scores, selection_metric, settings)
    meta["evaluation"] = f"out-of-fold scores of {split.k}-fold cross-validation ({len(split.rows)} rows)"
    model_dir = ClassicalModel(tokenizer=tokenizer, featurizer=featurizer, head=head, meta=meta).save(
        Path(work_dir) / "model"
    )
    wall_s = time.perf_counter() - started
    callbacks.event(
        "info",
        f"auto: {classical.FAMILY} refit on all {len(texts)} rows ({'+'.join(blocks)}, {weighting}, "
        f"{grid.strength_name} {strength:g}: {agreed}) in {wall_s:.1f} s; calibrated on out-of-fold logits",
        data={"refit": {"rows": len(texts), **{k: v for k, v in settings.items() if k != "grid"}}},
    )
    return TrainResult(
        model_dir=model_dir,
        metrics=scores,
        trained_tokens=int(sum(len(t) for t in texts)),
        steps=1,
        epochs_completed=1.0,
        hyperparameters={
            "family": classical.FAMILY,
            **settings,
            "n_features": featurizer.n_features,
            "max_chars": classical.MAX_CHARS,
            "seed": config.seed,
            "selection_metric": selection_metric,
            "train_seconds": round(wall_s, 3),
            "refit": {"rows": len(texts), "k": split.k, "settings": agreed,
                      "calibration": "fit on out-of-fold logits", "metrics": "out-of-fold"},
            "reasons": {grid.strength_name: agreed, "features": agreed},
        },  # fmt: skip
        history=[],
    )


def _consensus(task: str, results: list[TrainResult]) -> tuple[tuple[str, ...], str, float, str]:
    """The blocks and weighting most folds chose (ties: the earliest fold's), and the median strength
    (the lower middle one: a value some fold chose) of the folds that chose them."""
    name = "alpha" if task == "regression" else "C"
    chosen = [(tuple(str(r.hyperparameters["ngram_blocks"]).split("+")), str(r.hyperparameters["weighting"]),
               float(r.hyperparameters[name])) for r in results]  # fmt: skip
    counts = Counter((b, w) for b, w, _ in chosen)
    (blocks, weighting), n = max(counts.items(), key=lambda kv: (kv[1], -_first(chosen, kv[0])))
    strengths = sorted(s for b, w, s in chosen if (b, w) == (blocks, weighting))
    strength = strengths[(len(strengths) - 1) // 2]
    agreed = (
        f"{'+'.join(blocks)}/{weighting} chosen by {n} of {len(chosen)} folds, {name} the median "
        f"{strength:g} of theirs ({', '.join(f'{s:g}' for s in strengths)})"
    )
    return blocks, weighting, strength, agreed


def _first(chosen: list[tuple[tuple[str, ...], str, float]], key: tuple[tuple[str, ...], str]) -> int:
    return next(i for i, (b, w, _) in enumerate(chosen) if (b, w) == key)


def _calibrate_oof(
    task: str, head: LinearHead, raw: np.ndarray, y: np.ndarray, labels: list[str]
) -> tuple[LinearHead, dict[str, Any], dict[str, Any]]:
    """Fit temperature (single-label) or per-label Platt (multi-label) on the out-of-fold logits, fold it
    into the refit head (kept only where it lowers the out-of-fold ECE); the out-of-fold scores."""
    if task == "regression":
        return head, score(task, raw.astype(np.float32), y, labels), {}
    before = calibration.ece(task, outputs(task, raw), y)
    a, c, info = calibration.fit_scaling(task, raw, y)
    after = calibration.ece(task, outputs(task, raw * a + c), y)
    if before is not None and after is not None and after > before:
        raised = f"{info['calibration']} fit raised out-of-fold ECE {before:.4f} -> {after:.4f}"
        info = {"calibration": f"none ({raised})"}
        a, c, after = np.ones(raw.shape[1]), np.zeros(raw.shape[1]), before
    new = LinearHead((head.weights * a.astype(np.float32)).astype(np.float32),
                     (head.bias * a + c).astype(np.float32))  # fmt: skip
    scores = score(task, (raw * a + c).astype(np.float32), y, labels)
    scores.update({"ece_uncalibrated": before, "ece": after})
    info.update({"ece_before": before, "ece_after": after, "fit_on": "out-of-fold logits"})
    return new, scores, info
