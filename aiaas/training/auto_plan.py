"""Planning auto's transformer run: fully, shortened to the epochs that fit, or not at all.

The transformer gets whatever is left of `time_budget_s` after tfidf-linear. Its cost is
estimated from a few real optimizer steps on real batches (`estimate_transformer`), with
what follows the run inside the budget (calibration and the ensemble's scoring: a model load
and a validation pass each, and the directories written); if a full run does not fit it gets
fewer epochs, and if one epoch does not fit it is skipped. (Export and its int8 guard run
after the job's training, outside `time_budget_s`.)
Text the base model's tokenizer cannot read (aiaas.training.readability) skips it too.
A run that overshoots its estimate by more than OVERRUN (plus GRACE_S) is stopped.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.core.errors import AiaasError
from aiaas.training import batching, components, hyperparams, readability, runtime
from aiaas.training.base_models import ResolvedBaseModel
from aiaas.training.config import TrainConfig
from aiaas.training.loop import PERIODIC_MIN_SECONDS
from aiaas.training.types import PreparedDataLike

PLAN_FILE = "auto_plan.json"
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
# After the run, inside the budget too: the calibration and the ensemble's scoring each load the trained
# model again and run it over the validation texts; writing the calibrated and the ensemble directories.
AFTER_PASSES = 2
AFTER_WRITE_S = 5.0


def plan_transformer(
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
                    "unreadable": True,
                    "reason": f"{config.base_model}'s tokenizer reads {read['unk_rate']:.0%} of the training "
                    f"text as {read['unk_token']} (over {readability.UNK_SKIP:.0%}): it cannot read this text, "
                    "so no budget is spent fine-tuning it; char-cnn, which learns from the characters, "
                    "gets it instead",
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
    after = float(estimate.get("after_seconds", 0.0))  # calibration, the ensemble's scores, the writes
    full = fixed + planned * per_epoch + after
    fits = math.floor((left_s - fixed - after) / per_epoch) if per_epoch > 0 else planned
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
            "reason": f"one epoch needs ~{fixed + per_epoch + after:.0f} s, {left_s:.0f} s left",
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
        tokenizer, ids, targets, lengths = _training_set(config, data, base, labels)
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
    validation_pass = EVAL_COST * train_epoch * len(data.validation) / max(1, len(data.train))
    return {
        "base_model": base.id,
        "planned_epochs": hp.n_epochs,
        "batch_size": hp.batch_size,
        "precision": precision,
        "threads": threads,
        "seconds_per_1k_tokens": round(per_token * 1000, 4),
        "epoch_seconds": round(train_epoch + eval_epoch + CHECKPOINT_S * checkpoints_per_epoch, 2),
        "fixed_seconds": round(FIXED_S + load_s, 2),
        "after_seconds": round(AFTER_PASSES * (load_s + validation_pass) + AFTER_WRITE_S, 2),
        "estimate_seconds": round(time.perf_counter() - started, 2),
    }


def _training_set(
    config: TrainConfig, data: PreparedDataLike, base: ResolvedBaseModel, labels: list[str]
) -> tuple[Any, list[list[int]], np.ndarray, np.ndarray]:
    """(tokenizer, token ids, targets, lengths) of the training texts, as the engine prepares them."""
    tokenizer = components.load_tokenizer(base)
    max_length = components.max_length(config.max_length, base, tokenizer)
    ids = batching.tokenize(tokenizer, [ex.text for ex in data.train], max_length)
    targets = batching.encode_targets(config.task, [ex.label for ex in data.train], labels, split="train")
    if config.task == "regression":
        targets = (targets - targets.mean()) / (targets.std() or 1.0)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    return tokenizer, ids, targets, lengths


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


def replan(plan: dict[str, Any], left_s: float) -> dict[str, Any]:
    """`plan`'s estimate fitted again to `left_s` (one run on the split, after k fold fits stopped)."""
    if "epoch_seconds" not in plan:
        return {"run": False, "reason": plan.get("reason", "no estimate")}
    return _fit_plan(plan, left_s)


def plan_folds(plan: dict[str, Any], k: int, pooled_rows: int, train_rows: int) -> dict[str, Any]:
    """Whether k fold fits of the transformer (aiaas.training.auto_cv) fit in what `plan` left, each
    on (k-1)/k of the pooled rows at the plan's cost per row; each fold's time limit. A transformer
    that did not get its full epochs on the split does not get k fits either."""
    if not plan.get("run"):
        return {"run": False, "reason": f"the transformer is not trained ({plan.get('reason')})"}
    if plan.get("n_epochs"):
        return {"run": False, "reason": "it was shortened to fit one run; k fold fits do not fit"}
    fold_rows = pooled_rows * (k - 1) / k
    per_epoch = float(plan["epoch_seconds"]) * fold_rows / max(1, train_rows)
    fold_s = float(plan["fixed_seconds"]) + int(plan["planned_epochs"]) * per_epoch
    need, left = k * fold_s, float(plan["left_seconds"])
    out = {"k": k, "fold_seconds": round(fold_s, 1), "seconds": round(need, 1), "left_seconds": round(left, 1)}
    if need > left:
        return {**out, "run": False, "reason": f"{k} fold fits need ~{need:.0f} s, {left:.0f} s left"}
    return {
        **out,
        "run": True,
        "reason": f"{k} fold fits need ~{need:.0f} s of {left:.0f} s left",
        "hard_limit_s": round(max(fold_s * (1 + OVERRUN), fold_s + GRACE_S), 1),
    }
