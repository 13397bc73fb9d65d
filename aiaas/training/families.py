"""Model families, and `auto`: train the cheap one first, the transformer if time allows, keep the better.

    transformer    aiaas.training.train: fine-tune a BERT-family encoder (the default)
    tfidf-linear   aiaas.training.classical(_train): n-gram TF-IDF + a linear model, seconds on a CPU
    auto           both, judged on the validation set by the engine's selection metric

Why auto trains tfidf-linear first: it takes seconds, so a job always has a model, and
on some data it simply wins (measured: 10-class Chinese headlines, char n-grams 0.82
against MiniLM-L6's 0.46, whose vocabulary maps most Chinese characters to [UNK]).
The transformer then gets whatever is left of `time_budget_s`. Its cost is estimated
from a few real optimizer steps on real batches; if a full run does not fit it gets
fewer epochs, and if one epoch does not fit it is skipped. A run that overshoots the
budget by more than OVERRUN is stopped, and tfidf-linear is kept.

Both scores, the decision and why are recorded in an event, in the winner's
aiaas.json ("model_selection", carried into the serving artifact) and in the result's
hyperparameters (which the job runner writes into the lineage and model card).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.core.errors import AiaasError, InvalidRequest
from aiaas.training import (
    batching,
    classical,
    components,
    ensemble,
    hyperparams,
    metrics,
    readability,
    runtime,
)
from aiaas.training.base_models import MINILM_ID
from aiaas.training.classical_train import train_classical
from aiaas.training.config import TrainConfig
from aiaas.training.loop import PERIODIC_MIN_SECONDS, train
from aiaas.training.types import PreparedDataLike, TrainCallbacks, TrainingStopped, TrainResult

logger = logging.getLogger(__name__)

TRANSFORMER = "transformer"
AUTO = "auto"
FAMILIES = (TRANSFORMER, classical.FAMILY, AUTO)
# auto's transformer candidate when the job names none ("auto" rather than "auto:<base model>").
DEFAULT_AUTO_BASE = MINILM_ID
# What each family is, for catalogs and error messages.
DESCRIPTIONS = {
    TRANSFORMER: "fine-tune a BERT-family encoder: name the base model itself (e.g. 'minilm-l6')",
    classical.FAMILY: "word and character n-gram TF-IDF with a linear model; trains in seconds on a CPU, "
    "any language",
    AUTO: f"trains {classical.FAMILY} first, then the transformer within time_budget_s, and keeps the "
    "better on the validation set; 'auto:<base model>' picks the transformer",
}
META_FILE = "aiaas.json"
PLAN_FILE = "auto_plan.json"
# What auto may spend on both families together when the caller sets no budget.
DEFAULT_TIME_BUDGET_S = 900.0
# A transformer run may overshoot its estimate by this fraction (plus GRACE_S) before it is stopped.
OVERRUN = 0.25
GRACE_S = 30.0
# Timed optimizer steps for the estimate (each after an untimed step on the same batch).
ESTIMATE_STEPS = 4
# Per epoch end: evaluation is a forward pass (~1/3 of a training step per example) and a
# checkpoint save; per run: loading the model and writing the final directory.
EVAL_COST = 0.35
CHECKPOINT_S = 1.5
FIXED_S = 10.0


@dataclass
class FamilyResult(TrainResult):
    """A TrainResult that also says which family produced it and, for auto, how it was chosen."""

    family: str = TRANSFORMER
    selection: dict[str, Any] | None = None


def family_for_model(model: str) -> tuple[str, str]:
    """A job's `model` -> (family, base model for the transformer side).

    "tfidf-linear" and "auto" are families; "auto:<base model>" is auto with that base
    model as its transformer candidate ("auto" alone uses DEFAULT_AUTO_BASE); any other
    name is a transformer base model. Family names are matched case-insensitively.
    """
    name = (model or "").strip()
    lowered = name.lower()
    if lowered == classical.FAMILY:
        return classical.FAMILY, classical.FAMILY
    if lowered == AUTO:
        return AUTO, DEFAULT_AUTO_BASE
    if lowered.startswith(AUTO + ":"):
        base = name[len(AUTO) + 1 :].strip()
        if not base:
            raise InvalidRequest(
                "'auto:' needs a base model after the colon, e.g. 'auto:minilm-l6'; or send 'auto' "
                f"to use {DEFAULT_AUTO_BASE}.",
                param="model",
            )
        if base.lower() in (classical.FAMILY, AUTO) or base.lower().startswith(AUTO + ":"):
            raise InvalidRequest(
                f"'{name}': after 'auto:' comes the transformer base model auto compares "
                f"{classical.FAMILY} with, e.g. 'auto:minilm-l6'.",
                param="model",
            )
        return AUTO, base
    return TRANSFORMER, name


def train_family(
    family: str,
    config: TrainConfig,
    data: PreparedDataLike,
    work_dir: Path,
    callbacks: TrainCallbacks,
    *,
    base_models_dir: Path | None = None,
    time_budget_s: float | None = None,
) -> FamilyResult:
    """Train `family` ("transformer" | "tfidf-linear" | "auto"). For auto, `config.base_model` is
    the transformer candidate and `time_budget_s` (default DEFAULT_TIME_BUDGET_S) bounds both."""
    work_dir = Path(work_dir)
    if family == TRANSFORMER:
        result = train(config, data, work_dir, callbacks, base_models_dir=base_models_dir)
        _calibrate(result, config.task, data, callbacks)
        _annotate(result.model_dir, {"family": TRANSFORMER})
        return _as_family(result, TRANSFORMER)
    if family == classical.FAMILY:
        return _as_family(train_classical(config, data, work_dir, callbacks), classical.FAMILY)
    if family == AUTO:
        budget = DEFAULT_TIME_BUDGET_S if time_budget_s is None else float(time_budget_s)
        return _train_auto(config, data, work_dir, callbacks, base_models_dir, budget)
    raise InvalidRequest(f"Unknown model family {family!r}; use one of {', '.join(FAMILIES)}.", param="model")


# -- auto -----------------------------------------------------------------------------------
def _train_auto(
    config: TrainConfig,
    data: PreparedDataLike,
    work_dir: Path,
    callbacks: TrainCallbacks,
    base_models_dir: Path | None,
    budget: float,
) -> FamilyResult:
    started = time.monotonic()
    task = config.task
    metric, _ = metrics.SELECTION[task]
    classic = train_classical(config, data, work_dir / classical.FAMILY, callbacks)
    candidates: dict[str, dict[str, Any]] = {
        classical.FAMILY: _candidate(task, classic, time.monotonic() - started)
    }
    results: dict[str, TrainResult] = {classical.FAMILY: classic}

    transformer_started = time.monotonic()
    plan = _plan_transformer(
        config, data, work_dir, base_models_dir, budget - (transformer_started - started)
    )
    transformer, candidates[TRANSFORMER] = _try_transformer(
        config, data, work_dir, callbacks, base_models_dir, plan, transformer_started
    )
    if transformer is not None:
        results[TRANSFORMER] = transformer
    candidates[TRANSFORMER]["base_model"] = plan.get("base_model", config.base_model)

    chosen, why = _choose(task, candidates)
    # The ensemble is recorded beside the candidates (the families trained), not among them.
    combined: dict[str, Any] = {}
    if transformer is not None:
        chosen, why = _try_ensemble(
            config, data, work_dir, callbacks, results, candidates, combined, chosen, why
        )
    selection = {
        "chosen": chosen,
        "reason": why,
        "metric": metric,
        "candidates": candidates,
        **({"ensemble": combined} if combined else {}),
        "time_budget_s": budget,
        "seconds": round(time.monotonic() - started, 1),
        "transformer_plan": plan,
    }
    callbacks.event("info", f"auto: {why}", data={"model_selection": selection})
    winner = results[chosen]
    _annotate(winner.model_dir, {"family": chosen, "model_selection": selection})
    out = _as_family(winner, chosen, selection)
    out.hyperparameters = {**winner.hyperparameters, "family": chosen, "model_selection": selection}
    # Both candidates were trained: the job's trained tokens are the sum (each in its own
    # tokenizer's units: characters for tfidf-linear, subword tokens x epochs for the transformer).
    out.trained_tokens = sum(int(r.trained_tokens or 0) for r in results.values())
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
    guard = _Deadline(callbacks, started + plan["hard_limit_s"])
    try:
        result = train(t_config, data, work_dir / TRANSFORMER, guard, base_models_dir=base_models_dir)
        _calibrate(result, task, data, callbacks)
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
) -> tuple[str, str]:
    """The weighted average of both members' calibrated scores (aiaas.training.ensemble), weight fit
    on validation; it replaces the single winner only when it beats it there."""
    task = config.task
    metric, sign = metrics.SELECTION[task]
    started = time.monotonic()
    labels = components.check_data(config, data)
    texts = [ex.text for ex in data.validation]
    probs = {
        name: ensemble.validation_probs(results[name].model_dir, name, texts) for name in ensemble.MEMBERS
    }
    y = ensemble.targets(task, data, labels)
    weight, scores, tried = ensemble.fit_weight(task, probs[TRANSFORMER], probs[classical.FAMILY], y, labels)
    record.update(
        {
            "status": "trained",
            "weight": weight,
            "seconds": round(time.monotonic() - started, 1),
            **{k: float(v) for k, v in scores.items() if isinstance(v, float)},
        }
    )
    best = candidates[chosen]
    if not (0.0 < weight < 1.0 and sign * scores[metric] > sign * best[metric] + 1e-12):
        record["status"] = "not kept"
        return (
            chosen,
            f"{why}; the ensemble (weight {weight:g}) {metric} {scores[metric]:.4f} does not beat it",
        )
    if not ensemble.servable():
        record["status"] = "not kept: the serving runtime does not load ensembles yet"
        return chosen, (
            f"{why}; the ensemble (weight {weight:g}) {metric} {scores[metric]:.4f} would beat it, but "
            "the serving runtime does not load ensembles yet"
        )
    model_dir = ensemble.write_ensemble(
        work_dir / ensemble.FAMILY / "model",
        {name: results[name].model_dir for name in ensemble.MEMBERS},
        task=task, labels=labels, weight=weight, scores=scores, selection_metric=metric,
    )  # fmt: skip
    results[ensemble.FAMILY] = TrainResult(
        model_dir=model_dir,
        metrics=scores,
        trained_tokens=0,
        steps=len(tried),
        epochs_completed=1.0,
        hyperparameters={"family": ensemble.FAMILY, "weight": weight, "weights_tried": tried},
        history=[],
    )
    return ensemble.FAMILY, (
        f"ensemble (weight {weight:g} on the transformer) {metric} {scores[metric]:.4f} beats {chosen} "
        f"{best[metric]:.4f}"
    )


def _choose(task: str, candidates: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """The better validation score wins; a tie keeps tfidf-linear, the cheaper one to serve."""
    metric, sign = metrics.SELECTION[task]
    classic, transformer = candidates[classical.FAMILY], candidates[TRANSFORMER]
    if transformer.get("status") != "trained":
        return classical.FAMILY, f"kept {classical.FAMILY}: the transformer was {transformer.get('status')}"
    a, b = classic.get(metric), transformer.get(metric)
    if a is None or b is None:
        return classical.FAMILY, f"kept {classical.FAMILY}: no validation {metric} to compare"
    if sign * b > sign * a + 1e-12:
        return TRANSFORMER, f"{TRANSFORMER} {metric} {b:.4f} beats {classical.FAMILY} {a:.4f}"
    verb = "ties" if abs(a - b) <= 1e-12 else "beats"
    return classical.FAMILY, f"{classical.FAMILY} {metric} {a:.4f} {verb} {TRANSFORMER} {b:.4f}"


def _candidate(task: str, result: TrainResult, seconds: float) -> dict[str, Any]:
    keys = ("accuracy", "macro_f1", "micro_f1", "rmse", "mae", "r2", "valid_loss", "ece", "ece_uncalibrated")
    out: dict[str, Any] = {
        "status": "trained",
        "seconds": round(seconds, 1),
        "trained_tokens": int(result.trained_tokens or 0),
    }
    out.update({k: float(result.metrics[k]) for k in keys if k in result.metrics})
    return out


class _Deadline:
    """The job's callbacks, plus a stop once the transformer's time is up."""

    def __init__(self, inner: TrainCallbacks, deadline: float) -> None:
        self.inner = inner
        self.deadline = deadline
        self.over_budget = False

    def event(self, level: str, message: str, *, type: str = "message", data: dict | None = None) -> None:
        self.inner.event(level, message, type=type, data=data)

    def checkpoint(self, step: int, path: Path, metrics: dict) -> None:
        self.inner.checkpoint(step, path, metrics)

    def should_stop(self) -> bool:
        if self.inner.should_stop():
            return True
        if time.monotonic() > self.deadline:
            self.over_budget = True
            return True
        return False

    def seconds_to_save_before_stop(self) -> float | None:
        """A shutdown saves a checkpoint first, as for a plain transformer job; the budget running out does not."""
        if self.over_budget:
            return None
        inner = getattr(self.inner, "seconds_to_save_before_stop", None)
        return inner() if inner is not None else None


# -- planning the transformer run -----------------------------------------------------------
def _plan_transformer(
    config: TrainConfig, data: PreparedDataLike, work_dir: Path, base_models_dir: Path | None, left_s: float
) -> dict[str, Any]:
    """Run the transformer fully, shortened, or not at all. A job re-run after a crash reuses
    the first plan, so the transformer resumes its checkpoints under the same settings."""
    plan_path = work_dir / PLAN_FILE
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text())
        plan["reason"] = "resuming with the plan of the first attempt: " + plan["reason"]
        return plan
    if not data.validation:
        plan = {"run": False, "reason": "no validation set to compare the two families on"}
    elif left_s <= FIXED_S:
        plan = {"run": False, "reason": f"the time budget is spent ({max(0.0, left_s):.0f} s left)"}
    else:
        try:
            read = readability.unk_rate(config.base_model, [ex.text for ex in data.train], base_models_dir)
            if read["unk_rate"] > readability.UNK_SKIP:
                plan = {
                    "run": False,
                    "readability": read,
                    "reason": f"{config.base_model}'s tokenizer reads {read['unk_rate']:.0%} of the training "
                    f"text as {read['unk_token']} (over {readability.UNK_SKIP:.0%}): it cannot read this text, "
                    "so no budget is spent fine-tuning it",
                }
            else:
                estimate = estimate_transformer(config, data, base_models_dir=base_models_dir)
                plan = {**_fit_plan(estimate, left_s - estimate["estimate_seconds"]), "readability": read}
        except AiaasError as exc:  # e.g. the base model is not installed here
            plan = {"run": False, "reason": f"{config.base_model} cannot be trained here: {exc.message}"}
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps(plan, indent=2))
    return plan


def _fit_plan(estimate: dict[str, Any], left_s: float) -> dict[str, Any]:
    planned, per_epoch, fixed = (
        estimate["planned_epochs"],
        estimate["epoch_seconds"],
        estimate["fixed_seconds"],
    )
    full = fixed + planned * per_epoch
    fits = math.floor((left_s - fixed) / per_epoch) if per_epoch > 0 else planned
    plan: dict[str, Any] = {**estimate, "left_seconds": round(left_s, 1), "full_run_seconds": round(full, 1)}
    if fits >= planned:
        epochs, reason = (
            None,
            f"transformer gets its full {planned} epochs (~{full:.0f} s of {left_s:.0f} s left)",
        )
    elif fits >= 1:
        epochs = fits
        reason = (
            f"transformer shortened to {fits} of {planned} epochs: a full run needs ~{full:.0f} s, "
            f"{left_s:.0f} s left"
        )
    else:
        return {
            **plan,
            "run": False,
            "n_epochs": None,
            "reason": f"one epoch needs ~{fixed + per_epoch:.0f} s, {left_s:.0f} s left",
        }
    seconds = fixed + (epochs or planned) * per_epoch
    return {
        **plan,
        "run": True,
        "n_epochs": epochs,
        "reason": reason,
        "hard_limit_s": round(max(seconds * (1 + OVERRUN), seconds + GRACE_S), 1),
    }


def estimate_transformer(
    config: TrainConfig, data: PreparedDataLike, *, base_models_dir: Path | None = None
) -> dict[str, Any]:
    """Seconds a transformer run would take here, from ESTIMATE_STEPS real optimizer steps.

    Steps are timed on batches built like the engine builds them (length-grouped, dynamic
    padding, same batch size, precision, threads and optimizer), picked across the range of
    the epoch's batch sizes, and scaled to an epoch's steps; evaluation and checkpoints are
    added per epoch.
    """
    import torch

    started = time.perf_counter()
    labels = components.check_data(config, data)
    base = components.resolve(config.base_model, base_models_dir)
    device = runtime.pick_device()
    precision, _ = runtime.pick_precision(config.precision, device)
    threads = config.num_threads or runtime.available_cores()
    with runtime.torch_threads(threads):
        tokenizer = components.load_tokenizer(base)
        max_length = components.max_length(config.max_length, base, tokenizer)
        ids = batching.tokenize(tokenizer, [ex.text for ex in data.train], max_length)
        targets = batching.encode_targets(config.task, [ex.label for ex in data.train], labels, split="train")
        if config.task == "regression":
            targets = (targets - targets.mean()) / (targets.std() or 1.0)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        hp = hyperparams.resolve(
            config, n_train=len(ids), num_parameters=base.num_parameters, hidden_size=base.hidden_size
        )
        batches = batching.epoch_batches(lengths, hp.batch_size, seed=config.seed, epoch=0)
        torch.manual_seed(config.seed)
        load_started = time.perf_counter()
        model = components.load_model(base, config.task, labels).to(device)
        load_s = time.perf_counter() - load_started
        # The engine's own update (fused AdamW, embeddings frozen where it freezes them): the update
        # is a third or more of a short step, so a generic optimizer here overestimated runs ~2x.
        components.freeze_embeddings(config, model, device)
        optimizer, _ = components.optimizer(model, config, 1e-6, device)  # the step's cost, not its effect
        loss_fn = components.loss_fn(config.task, targets, len(labels), False, device)
        model.train()
        timed_s, timed_tokens, n_timed = _time_steps(
            config, model, optimizer, loss_fn, tokenizer.pad_token_id, ids, targets, lengths, batches,
            device, precision,
        )  # fmt: skip
        del model, optimizer
    per_token = timed_s / max(1.0, timed_tokens)
    train_epoch = timed_s / n_timed * len(batches)
    eval_epoch = EVAL_COST * train_epoch * len(data.validation) / max(1, len(data.train))
    # Each epoch end, plus periodic saves: ~10 per run, but at most one a minute (loop.PERIODIC_MIN_SECONDS).
    periodic = min(10 / max(1, hp.n_epochs), train_epoch / PERIODIC_MIN_SECONDS)
    checkpoints_per_epoch = 1 + periodic
    return {
        "base_model": base.id,
        "planned_epochs": hp.n_epochs,
        "batch_size": hp.batch_size,
        "precision": precision,
        "threads": threads,
        "seconds_per_1k_tokens": round(per_token * 1000, 4),
        "epoch_seconds": round(train_epoch + eval_epoch + CHECKPOINT_S * checkpoints_per_epoch, 2),
        "fixed_seconds": round(FIXED_S + load_s, 2),
        "estimate_seconds": round(time.perf_counter() - started, 2),
    }


def _time_steps(
    config: TrainConfig,
    model: Any,
    optimizer: Any,
    loss_fn: Any,
    pad_id: int,
    ids: list[list[int]],
    targets: np.ndarray,
    lengths: np.ndarray,
    batches: list[np.ndarray],
    device: str,
    precision: str,
) -> tuple[float, float, int]:
    """Seconds and padded tokens of ESTIMATE_STEPS timed optimizer steps, and how many were timed.

    Timed batches at evenly spaced quantiles of the epoch's padded batch sizes, so their mean
    step time is the epoch's mean step time. (Scaling a few steps' cost per token instead
    overestimated a tweets run 2x: part of a step, the optimizer update, costs the same
    whatever the batch's length.) Each runs twice and only the second is timed: the first
    pass at a new sequence length builds kernels for that shape (measured ~10% more).
    """
    import torch

    padded = np.array([len(b) * lengths[b].max() for b in batches], dtype=np.float64)
    order = np.argsort(padded, kind="stable")
    quantiles = (np.arange(ESTIMATE_STEPS) + 0.5) / ESTIMATE_STEPS
    picks = [batches[order[int(q * len(batches))]] for q in quantiles]
    timed_s, timed_tokens = 0.0, 0.0
    for index in picks:
        for timed in (False, True):
            step_started = time.perf_counter()
            ids_t, mask, _ = batching.collate(ids, index, pad_id)
            with runtime.autocast(device, precision):
                logits = model(input_ids=ids_t.to(device), attention_mask=mask.to(device)).logits
            loss = loss_fn(logits.float(), torch.as_tensor(targets[index]).to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if timed:
                timed_s += time.perf_counter() - step_started
                timed_tokens += len(index) * lengths[index].max()
    return timed_s, timed_tokens, len(picks)


# -- helpers --------------------------------------------------------------------------------
def _calibrate(result: TrainResult, task: str, data: PreparedDataLike, callbacks: TrainCallbacks) -> None:
    """Temperature / per-label Platt fit on validation, folded into the transformer's head
    (aiaas.training.calibrate_transformer); recorded in its metrics, aiaas.json and hyperparameters."""
    from aiaas.training.calibrate_transformer import calibrate

    info = calibrate(result, task, data, callbacks)
    if info:
        result.hyperparameters = {**result.hyperparameters, **info}


def _as_family(result: TrainResult, family: str, selection: dict[str, Any] | None = None) -> FamilyResult:
    values = {f.name: getattr(result, f.name) for f in dataclasses.fields(TrainResult)}
    return FamilyResult(**values, family=family, selection=selection)


def _annotate(model_dir: Path, extra: dict[str, Any]) -> None:
    """Add keys to a finished model's aiaas.json (the exporter copies them into the artifact)."""
    path = Path(model_dir) / META_FILE
    meta = json.loads(path.read_text())
    meta.update(extra)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(path)


__all__ = [
    "AUTO",
    "DEFAULT_AUTO_BASE",
    "DEFAULT_TIME_BUDGET_S",
    "DESCRIPTIONS",
    "FAMILIES",
    "FamilyResult",
    "estimate_transformer",
    "family_for_model",
    "train_family",
]
