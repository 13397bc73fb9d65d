"""`auto`: train tfidf-linear first, the transformer if time allows, keep the better (or both, averaged).

Why tfidf-linear comes first: it takes seconds, so a job always has a model, and on some
data it simply wins. The transformer's run is planned by aiaas.training.auto_plan within
what is left of the budget; the ensemble of the two (aiaas.training.ensemble) is scored on
validation and replaces the single winner only when it beats it there. Where the base
model cannot read the text (its tokenizer's [UNK] rate, aiaas.training.readability), the
transformer is skipped and char-cnn (aiaas.training.charcnn), which learns from the
characters, is trained with the budget instead and compared with tfidf-linear.

Under 1,000 labelled rows (aiaas.training.auto_cv.KFold) the families are judged by k-fold
cross-validation on train + validation instead, where the time budget allows it, and the winner
is refit on all rows (aiaas.training.auto_kfold says which family is cross-validated, and how
each is served).

Both scores, the decision and why are recorded in an event, in the winner's aiaas.json
("model_selection", carried into the serving artifact) and in the result's
hyperparameters (which the job runner writes into the lineage and model card).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from aiaas.core.errors import AiaasError
from aiaas.training import auto_cv, auto_plan, charcnn, classical, components, ensemble, metrics
from aiaas.training.auto_cv import Deadline
from aiaas.training.auto_kfold import SmallData
from aiaas.training.calibrate_transformer import split_for_calibration
from aiaas.training.charcnn_train import train_charcnn
from aiaas.training.classical_train import train_classical
from aiaas.training.config import TrainConfig
from aiaas.training.family_result import TRANSFORMER, FamilyResult, annotate, as_family, calibrate
from aiaas.training.loop import train
from aiaas.training.types import PreparedDataLike, TrainCallbacks, TrainingStopped, TrainResult


def train_auto(
    config: TrainConfig,
    data: PreparedDataLike,
    work_dir: Path,
    callbacks: TrainCallbacks,
    base_models_dir: Path | None,
    budget: float,
    kfold: auto_cv.KFold | None = None,
) -> FamilyResult:
    started = time.monotonic()
    task = config.task
    metric, _ = metrics.SELECTION[task]
    classic = train_classical(config, data, work_dir / classical.FAMILY, callbacks)
    candidates: dict[str, dict[str, Any]] = {
        classical.FAMILY: _candidate(task, classic, time.monotonic() - started)
    }
    results: dict[str, TrainResult] = {classical.FAMILY: classic}
    small = SmallData.start(config, data, work_dir / "cv", callbacks, kfold or auto_cv.KFold(), started + budget)
    small.record_classical(candidates[classical.FAMILY])

    plan = _train_rivals(config, data, work_dir, callbacks, base_models_dir, started + budget, small,
                         candidates, results)
    transformer = results.get(TRANSFORMER)

    chosen, why, by_cv = _judge(task, candidates, small)
    # On all rows: tfidf-linear when it is kept, and before a k-fold ensemble (its member). A split-scored
    # ensemble's weight is fit on validation, which the refit trains on: it is judged with the split models.
    refit_first = by_cv and transformer is not None
    if refit_first:
        results[classical.FAMILY] = small.refit(config, callbacks, candidates[classical.FAMILY])
    # The ensemble is recorded beside the candidates (the families trained), not among them.
    combined: dict[str, Any] = {}
    if transformer is not None:
        chosen, why = _try_ensemble(
            config, data, work_dir, callbacks, results, candidates, combined, chosen, why,
            small if by_cv else None,
        )  # fmt: skip
    if chosen == classical.FAMILY and small.can_refit:
        results[classical.FAMILY] = small.refit(config, callbacks, candidates[classical.FAMILY])
        why = f"{why}; refit on all {len(small.rows)} rows"
    selection = {
        "chosen": chosen,
        "reason": why,
        "metric": metric,
        "scored_on": small.scored_on(by_cv),
        "candidates": candidates,
        **({"ensemble": combined} if combined else {}),
        **small.record(),
        "time_budget_s": budget,
        "seconds": round(time.monotonic() - started, 1),
        "transformer_plan": plan,
    }
    callbacks.event("info", f"auto: {why}", data={"model_selection": selection})
    return _winner(results, chosen, selection)


def _judge(task: str, candidates: dict[str, dict[str, Any]], small: SmallData) -> tuple[str, str, bool]:
    """The family kept, why, and whether the k folds' mean scores decided it (else the validation split)."""
    by_cv = small.judges(candidates)
    if by_cv:
        small.use_cv_scores(candidates)
    chosen, why = _choose(task, candidates)
    if by_cv:
        why = small.explain(chosen, why, candidates)
    elif small.folds is not None:
        why = f"{why} (on the validation split: {small.why_split(candidates)})"
    if charcnn.FAMILY in candidates:  # say why the transformer is not in the comparison
        why = f"{why} ({TRANSFORMER} skipped: {candidates[TRANSFORMER]['reason']})"
    return chosen, why, by_cv


def _train_rivals(
    config: TrainConfig,
    data: PreparedDataLike,
    work_dir: Path,
    callbacks: TrainCallbacks,
    base_models_dir: Path | None,
    deadline: float,
    small: SmallData,
    candidates: dict[str, dict[str, Any]],
    results: dict[str, TrainResult],
) -> dict[str, Any]:
    """tfidf-linear's rivals, into `candidates` and `results`: the transformer (k-fold when `small` says its
    folds fit, else on the split), and char-cnn where the base model cannot read the text. Returns the
    transformer's plan."""
    transformer_started = time.monotonic()
    plan = auto_plan.plan_transformer(config, data, work_dir, base_models_dir, deadline - transformer_started)
    folds_plan = small.plan_transformer(plan, callbacks)
    if folds_plan is not None and folds_plan["run"]:
        transformer, candidates[TRANSFORMER] = small.transformer(
            config, callbacks, base_models_dir, folds_plan, transformer_started
        )
        if transformer is None:  # a fold overran its limit: one run on the split, if that still fits
            stopped = candidates[TRANSFORMER]
            again = auto_plan.replan(plan, deadline - time.monotonic())
            transformer, candidates[TRANSFORMER] = _try_transformer(
                config, data, work_dir, callbacks, base_models_dir, again, time.monotonic()
            )
            candidates[TRANSFORMER].update({"cv": stopped["cv"], "cv_stopped": stopped["reason"]})
            candidates[TRANSFORMER]["trained_tokens"] = (
                int(candidates[TRANSFORMER].get("trained_tokens") or 0) + stopped["trained_tokens"]
            )
    else:
        transformer, candidates[TRANSFORMER] = _try_transformer(
            config, data, work_dir, callbacks, base_models_dir, plan, transformer_started
        )
    if transformer is not None:
        results[TRANSFORMER] = transformer
    candidates[TRANSFORMER]["base_model"] = plan.get("base_model", config.base_model)
    if plan.get("unreadable"):  # the base model cannot read the text: a family that learns its own
        cnn, candidates[charcnn.FAMILY] = _try_charcnn(config, data, work_dir, callbacks, deadline)
        if cnn is not None:
            results[charcnn.FAMILY] = cnn
    return plan


def _winner(results: dict[str, TrainResult], chosen: str, selection: dict[str, Any]) -> FamilyResult:
    """The chosen family's result, its model directory and hyperparameters annotated with the selection."""
    winner = results[chosen]
    annotate(winner.model_dir, {"family": chosen, "model_selection": selection})
    out = as_family(winner, chosen, selection)
    out.hyperparameters = {**winner.hyperparameters, "family": chosen, "model_selection": selection}
    # Every candidate trained counts: the job's trained tokens are the sum (each in its own tokenizer's
    # units: characters for tfidf-linear, subword tokens x epochs for the transformer, characters x epochs
    # for char-cnn), fold fits and the refit included.
    out.trained_tokens = sum(int(c.get("trained_tokens") or 0) for c in selection["candidates"].values())
    return out


def _try_transformer(
    config: TrainConfig,
    data: PreparedDataLike,
    work_dir: Path,
    callbacks: TrainCallbacks,
    base_models_dir: Path | None,
    plan: dict[str, Any],
    started: float,
) -> tuple[TrainResult | None, dict[str, Any]]:
    """The transformer candidate as `plan` allows: its result (None unless trained) and its record."""
    task = config.task
    if not plan["run"]:
        callbacks.event("info", f"auto: transformer skipped: {plan['reason']}", data={"auto_plan": plan})
        return None, {"status": "skipped", "reason": plan["reason"]}
    t_config = dataclasses.replace(config, n_epochs=plan["n_epochs"]) if plan.get("n_epochs") else config
    callbacks.event("info", f"auto: {plan['reason']}", data={"auto_plan": plan})
    guard = Deadline(callbacks, started + plan["hard_limit_s"])
    try:
        split = split_for_calibration(t_config, data)  # which validation rows pick the epoch, which calibrate
        result = train(t_config, split.data, work_dir / TRANSFORMER, guard, base_models_dir=base_models_dir)
        calibrate(result, task, data, callbacks, split)
        return result, _candidate(task, result, time.monotonic() - started)
    except TrainingStopped:
        if not guard.over_budget:
            raise  # cancelled or lease lost: not ours to swallow
        callbacks.event(
            "warning", f"auto: transformer stopped after {plan['hard_limit_s']:.0f} s, over budget."
        )
        return None, {
            "status": "stopped",
            "reason": f"over its time limit ({plan['hard_limit_s']:.0f} s)",
            "seconds": round(time.monotonic() - started, 1),
        }
    except AiaasError as exc:  # e.g. a diverged loss: the job still has its tfidf-linear model
        callbacks.event("warning", f"auto: transformer failed, keeping {classical.FAMILY}: {exc.message}")
        return None, {"status": "failed", "reason": exc.message}


def _try_charcnn(
    config: TrainConfig, data: PreparedDataLike, work_dir: Path, callbacks: TrainCallbacks, deadline: float
) -> tuple[TrainResult | None, dict[str, Any]]:
    """The char-cnn candidate (aiaas.training.charcnn) within what is left of the budget."""
    started = time.monotonic()
    if deadline - started <= auto_plan.FIXED_S:
        reason = f"the time budget is spent ({max(0.0, deadline - started):.0f} s left)"
        callbacks.event("info", f"auto: {charcnn.FAMILY} skipped: {reason}")
        return None, {"status": "skipped", "reason": reason}
    callbacks.event("info", f"auto: training {charcnn.FAMILY} within {deadline - started:.0f} s")
    try:
        result = train_charcnn(config, data, work_dir / charcnn.FAMILY, callbacks, deadline=deadline)
    except AiaasError as exc:
        callbacks.event(
            "warning", f"auto: {charcnn.FAMILY} failed, keeping {classical.FAMILY}: {exc.message}"
        )
        return None, {"status": "failed", "reason": exc.message}
    return result, _candidate(config.task, result, time.monotonic() - started)


def _try_ensemble(
    config: TrainConfig,
    data: PreparedDataLike,
    work_dir: Path,
    callbacks: TrainCallbacks,
    results: dict[str, TrainResult],
    candidates: dict[str, dict[str, Any]],
    record: dict[str, Any],
    chosen: str,
    why: str,
    cv: SmallData | None = None,
) -> tuple[str, str]:
    """The weighted average of both members' calibrated scores (aiaas.training.ensemble), weight fit
    on validation (with `cv`: on the out-of-fold scores); it replaces the single winner only when it
    beats it there (with `cv`: on the mean of the k folds' scores)."""
    task = config.task
    metric, sign = metrics.SELECTION[task]
    started = time.monotonic()
    labels = components.check_data(config, data)
    probs, y = _held_out_scores(task, data, results, labels, cv)
    weight, scores, tried = ensemble.fit_weight(task, probs[TRANSFORMER], probs[classical.FAMILY], y, labels)
    # Calibrated after combining, on the same held-out scores, and scored again with it.
    scores, fitted, cal_info = ensemble.calibrate_mix(task, weight, probs, y, labels, scores)
    record.update({"status": "trained", "weight": weight, "seconds": round(time.monotonic() - started, 1),
                   **{k: float(v) for k, v in scores.items() if isinstance(v, float)}})
    if fitted is not None:
        record["calibration"] = {**cal_info, **fitted}
    if cv is not None:
        record["cv"] = cv.ensemble_summary(weight, probs, y, fitted)
    value = _ensemble_value(config, probs, y, labels, scores, record, cv)
    best = candidates[chosen]
    if not (0.0 < weight < 1.0 and sign * value > sign * best[metric] + 1e-12):
        record["status"] = "not kept"
        return (
            chosen,
            f"{why}; the ensemble (weight {weight:g}) {metric} {value:.4f} does not beat it",
        )
    if not ensemble.servable():
        record["status"] = "not kept: the serving runtime does not load ensembles yet"
        return chosen, (
            f"{why}; the ensemble (weight {weight:g}) {metric} {value:.4f} would beat it, but "
            "the serving runtime does not load ensembles yet"
        )
    model_dir = ensemble.write_ensemble(
        work_dir / ensemble.FAMILY / "model",
        {name: results[name].model_dir for name in ensemble.MEMBERS},
        task=task, labels=labels, weight=weight, scores=scores, selection_metric=metric,
        calibrated=None if fitted is None else {**cal_info, **fitted},
    )  # fmt: skip
    results[ensemble.FAMILY] = TrainResult(
        model_dir=model_dir, metrics=scores, trained_tokens=0, steps=len(tried), epochs_completed=1.0,
        hyperparameters={"family": ensemble.FAMILY, "weight": weight, "weights_tried": tried}, history=[],
    )
    return ensemble.FAMILY, (
        f"ensemble (weight {weight:g} on the transformer) {metric} {value:.4f} beats {chosen} "
        f"{best[metric]:.4f}"
    )


def _ensemble_value(config: TrainConfig, probs: dict[str, Any], y: Any, labels: list[str],
                    scores: dict[str, Any], record: dict[str, Any], cv: SmallData | None) -> float:
    """The ensemble's selection metric, judged as the families were: by the mean of the k folds' scores,
    or on validation with each half's weight fit on the other half (the weight search must not grade
    itself: ensemble.cross_fit_score); the in-sample score where validation is too small to halve."""
    metric = metrics.SELECTION[config.task][0]
    if cv is not None:
        return float(record["cv"]["mean"][metric])
    cross = ensemble.cross_fit_score(
        config.task, probs[TRANSFORMER], probs[classical.FAMILY], y, labels, seed=config.seed)
    if cross is None:
        return float(scores[metric])
    record["cross_fit"] = {"weights": cross["weights"], metric: float(cross[metric])}
    return float(cross[metric])


def _held_out_scores(
    task: str, data: PreparedDataLike, results: dict[str, TrainResult], labels: list[str], cv: SmallData | None
) -> tuple[dict[str, Any], Any]:
    """Both members' scores the ensemble is fit on, and the truth: out-of-fold (k-fold) or on validation."""
    if cv is not None:
        return cv.oof_probs(), cv.oof_targets()
    texts = [ex.text for ex in data.validation]
    probs = {name: ensemble.validation_probs(results[name].model_dir, name, texts) for name in ensemble.MEMBERS}
    return probs, ensemble.targets(task, data, labels)


def _choose(task: str, candidates: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """The better validation score wins; a tie keeps tfidf-linear, the cheaper one to serve. The rival
    is the transformer, or char-cnn where it was trained instead (text the base model cannot read)."""
    metric, sign = metrics.SELECTION[task]
    rival = charcnn.FAMILY if charcnn.FAMILY in candidates else TRANSFORMER
    classic, other = candidates[classical.FAMILY], candidates[rival]
    if other.get("status") != "trained":
        return classical.FAMILY, f"kept {classical.FAMILY}: the {rival} was {other.get('status')}"
    a, b = classic.get(metric), other.get(metric)
    if a is None or b is None:
        return classical.FAMILY, f"kept {classical.FAMILY}: no validation {metric} to compare"
    if sign * b > sign * a + 1e-12:
        return rival, f"{rival} {metric} {b:.4f} beats {classical.FAMILY} {a:.4f}"
    verb = "ties" if abs(a - b) <= 1e-12 else "beats"
    return classical.FAMILY, f"{classical.FAMILY} {metric} {a:.4f} {verb} {rival} {b:.4f}"


def _candidate(task: str, result: TrainResult, seconds: float) -> dict[str, Any]:
    keys = ("accuracy", "macro_f1", "micro_f1", "rmse", "mae", "r2", "valid_loss", "ece", "ece_uncalibrated")
    out: dict[str, Any] = {
        "status": "trained",
        "seconds": round(seconds, 1),
        "trained_tokens": int(result.trained_tokens or 0),
    }
    out.update({k: float(result.metrics[k]) for k in keys if k in result.metrics})
    return out
