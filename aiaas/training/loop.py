"""train(): the one fine-tuning loop. Reads top to bottom: data, hyperparameters, model,
optimizer, resume, the loop (step, log, checkpoint, evaluate, early-stop), final model.
"""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.core.errors import InvalidRequest
from aiaas.training import artifact, batching, checkpoints, components, hyperparams, metrics, runtime
from aiaas.training.config import TrainConfig
from aiaas.training.types import PreparedDataLike, TrainCallbacks, TrainingStopped, TrainResult

logger = logging.getLogger(__name__)

LOGS_PER_RUN = 50  # train-metrics events over a whole run (at most one per step)
# With the automatic cadence, periodic (mid-epoch) checkpoints are at least this far apart: a
# save (weights, optimizer, RNG, fsync) costs ~0.5 s for MiniLM-L6, ~13 of them were 10% of a
# 1,000-sentence run, and a lost worker then redoes at most a minute plus 10% of the steps.
PERIODIC_MIN_SECONDS = 60.0
# Evaluation batches hold up to this many (padded) tokens, and at least 2 x the training batch.
EVAL_TOKENS = 4096


def train(
    config: TrainConfig,
    data: PreparedDataLike,
    work_dir: Path,
    callbacks: TrainCallbacks,
    *,
    base_models_dir: Path | None = None,
) -> TrainResult:
    """Fine-tune `config.base_model` on `data`; resume from `work_dir/checkpoints` if present.

    `config.base_model` is a catalog name, or the absolute directory a caller already got
    from resolve_base_model(); user input must go through resolve_base_model first.
    Raises TrainingStopped as soon as callbacks.should_stop() is true.
    """
    import torch

    work_dir = Path(work_dir)
    ckpt_root = work_dir / "checkpoints"
    task = config.task
    labels = components.check_data(config, data)
    base = components.resolve(config.base_model, base_models_dir)
    device = runtime.pick_device()
    precision, precision_why = runtime.pick_precision(config.precision, device)
    threads = config.num_threads or runtime.available_cores()

    def check_stop() -> None:
        if callbacks.should_stop():
            raise TrainingStopped("Training stopped on request; the latest checkpoint is kept for resuming.")

    with runtime.torch_threads(threads):
        # ---- data: tokenize once, no padding (batches pad to their own longest text) ----
        tokenizer = components.load_tokenizer(base)
        max_length = components.max_length(config.max_length, base, tokenizer)
        texts_train = [ex.text for ex in data.train]
        texts_val = [ex.text for ex in data.validation]
        y_train = batching.encode_targets(task, [ex.label for ex in data.train], labels, split="train")
        y_val = batching.encode_targets(
            task, [ex.label for ex in data.validation], labels, split="validation"
        )
        scaling: dict[str, float] | None = None
        if task == "regression":
            # Standardized targets keep the MSE gradients sane whatever the user's units.
            mean, std = float(y_train.mean()), float(y_train.std()) or 1.0
            scaling = {"mean": mean, "std": std}
            y_train, y_val = (y_train - mean) / std, (y_val - mean) / std
        train_set = batching.Encoded(
            batching.tokenize(tokenizer, texts_train, max_length, check_stop=check_stop), y_train
        )
        val_set = batching.Encoded(
            batching.tokenize(tokenizer, texts_val, max_length, check_stop=check_stop), y_val
        )
        lengths = train_set.lengths

        # ---- hyperparameters: resolve every "auto", with reasons ----
        hp = hyperparams.resolve(
            config, n_train=len(train_set), num_parameters=base.num_parameters, hidden_size=base.hidden_size
        )
        hp.precision, hp.num_threads, hp.device = precision, threads, device
        hp.reasons["precision"] = precision_why
        hp.reasons["num_threads"] = "requested" if config.num_threads else "auto: cores this process may use"
        hparams = {
            **hp.to_dict(),
            "max_length": max_length,
            "warmup_ratio": config.warmup_ratio,
            "weight_decay": config.weight_decay,
            "max_grad_norm": config.max_grad_norm,
            "early_stopping_patience": config.early_stopping_patience,
            "class_weights": config.class_weights,
            "seed": config.seed,
            "selection_metric": metrics.SELECTION[task][0],
            "omp_wait_policy_passive": runtime.omp_passive_in_effect(),
        }

        # ---- model, optimizer, schedule ----
        random.seed(config.seed)
        np.random.seed(config.seed % 2**32)
        torch.manual_seed(config.seed)  # the new head's init is reproducible
        model = components.load_model(base, task, labels).to(device)
        frozen, frozen_why = components.freeze_embeddings(config, model, device)
        optimizer, fused = components.optimizer(model, config, hp.learning_rate, device)
        hparams["freeze_embeddings"], hparams["fused_optimizer"] = frozen, fused
        hparams.setdefault("reasons", {})["freeze_embeddings"] = frozen_why
        warmup, total = hp.warmup_steps, hp.total_steps

        def lr_factor(s: int) -> float:  # linear warmup to the peak, then linear decay to 0
            if s < warmup:
                return (s + 1) / warmup
            return max(0.0, (total - s) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        loss_fn = components.loss_fn(task, y_train, len(labels), config.class_weights, device)
        eval_loss_fn = components.loss_fn(task, y_train, len(labels), False, device)

        # ---- resume from the latest checkpoint, or start fresh ----
        fingerprint = components.fingerprint(task, labels, data)
        state: dict[str, Any] = {
            "step": 0,
            "epoch": 0,
            "batch_in_epoch": 0,
            "trained_tokens": 0,
            "epoch_loss_sum": 0.0,
            "epoch_loss_count": 0,
            "best_score": None,
            "best_step": None,
            "best_metrics": None,
            "bad_epochs": 0,
            "stopped_early": False,
            "metrics": {},
            "history": [],
            "config": config.to_dict(),
            "hyperparameters": hparams,
            "fingerprint": fingerprint,
        }
        checkpoints.remove_partial(ckpt_root)
        latest = checkpoints.latest_checkpoint(ckpt_root)
        if latest is not None:
            saved = checkpoints.load_checkpoint(latest)
            components.check_resumable(saved["state"], config, fingerprint, ckpt_root)
            checkpoints.load_weights(model, latest)
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            checkpoints.set_rng_state(saved["state"].pop("rng"))
            state = saved["state"]
            state["hyperparameters"] = {
                **state["hyperparameters"],
                "num_threads": threads,
                "precision": precision,
            }
            hparams = state["hyperparameters"]
            callbacks.event(
                "info", f"Resumed from checkpoint at step {state['step']}.", data={"step": state["step"]}
            )
        else:
            callbacks.event(
                "info",
                f"Fine-tuning {base.id} ({task}) on {len(train_set)} examples "
                f"({len(val_set)} for validation): "
                f"{hp.n_epochs} epochs x {hp.steps_per_epoch} steps, batch {hp.batch_size}, "
                f"lr {hp.learning_rate:g}, {precision}, {threads} threads.",
                data={"hyperparameters": hparams},
            )
            if len(val_set) == 0:
                callbacks.event("warning", "No validation examples: no evaluation, no early stopping.")

        last_save = {"at": time.monotonic()}

        def save(reason: str) -> None:
            started = time.perf_counter()
            last_save["at"] = time.monotonic()
            path = checkpoints.save_checkpoint(
                ckpt_root,
                state["step"],
                model=model,
                tokenizer=tokenizer,
                optimizer=optimizer,
                scheduler=scheduler,
                state=state,
            )
            keep = {state["best_step"]} if state["best_step"] is not None else set()
            checkpoints.prune(ckpt_root, keep=keep)
            callbacks.checkpoint(state["step"], path, dict(state["metrics"]))
            logger.debug("Checkpoint %s (%s)", path, reason)
            window["t0"] += time.perf_counter() - started  # throughput counts training only

        # ---- the loop ----
        log_every = max(1, hp.total_steps // LOGS_PER_RUN)
        window = {"loss": 0.0, "steps": 0, "samples": 0, "tokens": 0, "t0": time.perf_counter()}
        model.train()
        while state["epoch"] < hp.n_epochs and not state["stopped_early"]:
            batches = batching.epoch_batches(lengths, hp.batch_size, seed=config.seed, epoch=state["epoch"])
            for index in batches[state["batch_in_epoch"] :]:
                check_stop()
                ids, mask, n_tokens = batching.collate(train_set.input_ids, index, tokenizer.pad_token_id)
                target = torch.as_tensor(train_set.targets[index]).to(device)
                with runtime.autocast(device, precision):
                    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                loss = loss_fn(logits.float(), target)
                loss_value = float(loss.item())
                if not math.isfinite(loss_value):
                    raise InvalidRequest(
                        f"Training diverged: the loss became {loss_value} at step {state['step'] + 1}. "
                        "Lower learning_rate (or learning_rate_multiplier), or set precision to fp32."
                    )
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)

                state["step"] += 1
                state["batch_in_epoch"] += 1
                state["trained_tokens"] += n_tokens
                state["epoch_loss_sum"] += loss_value
                state["epoch_loss_count"] += 1
                window["loss"] += loss_value
                window["steps"] += 1
                window["samples"] += len(index)
                window["tokens"] += n_tokens
                if state["step"] % log_every == 0:
                    elapsed = max(1e-9, time.perf_counter() - window["t0"])
                    record = {
                        "split": "train",
                        "step": state["step"],
                        "epoch": round(state["step"] / hp.steps_per_epoch, 4),
                        "loss": window["loss"] / window["steps"],
                        "learning_rate": lr,
                        "grad_norm": float(grad_norm),
                        "samples_per_second": window["samples"] / elapsed,
                        "tokens_per_second": window["tokens"] / elapsed,
                        "total_steps": hp.total_steps,
                    }
                    state["history"].append(record)
                    state["metrics"] = {"loss": record["loss"]}
                    callbacks.event(
                        "info",
                        f"Step {state['step']}/{hp.total_steps}: loss {record['loss']:.4f}",
                        type="metrics",
                        data=record,
                    )
                    window = {"loss": 0.0, "steps": 0, "samples": 0, "tokens": 0, "t0": time.perf_counter()}
                if (
                    state["batch_in_epoch"] < len(batches)
                    and state["step"] % hp.checkpoint_every_steps == 0
                    and (
                        config.checkpoint_every_steps is not None
                        or time.monotonic() - last_save["at"] >= PERIODIC_MIN_SECONDS
                    )
                ):
                    save("periodic")

            # ---- end of epoch: evaluate, track the best, maybe stop early, checkpoint ----
            train_loss = state["epoch_loss_sum"] / max(1, state["epoch_loss_count"])
            state.update(epoch=state["epoch"] + 1, batch_in_epoch=0, epoch_loss_sum=0.0, epoch_loss_count=0)
            record = {
                "split": "validation",
                "step": state["step"],
                "epoch": state["epoch"],
                "loss": train_loss,
                "train_loss": train_loss,
                "learning_rate": scheduler.get_last_lr()[0],
            }
            if len(val_set):
                check_stop()
                eval_started = time.perf_counter()
                scores = _evaluate(
                    model,
                    val_set,
                    task,
                    labels,
                    hp.batch_size * 2,
                    device,
                    precision,
                    eval_loss_fn,
                    scaling,
                    check_stop,
                    tokenizer.pad_token_id,
                )
                window["t0"] += time.perf_counter() - eval_started
                record.update({k: v for k, v in scores.items() if k != "per_label"})
                score = metrics.selection_score(task, scores)
                if state["best_score"] is None or tuple(score) > tuple(state["best_score"]):
                    state.update(
                        best_score=list(score), best_step=state["step"], best_metrics=scores, bad_epochs=0
                    )
                else:
                    state["bad_epochs"] += 1
                    patience = config.early_stopping_patience
                    if patience is not None and state["bad_epochs"] >= patience:
                        state["stopped_early"] = True
            else:
                state.update(best_step=state["step"], best_metrics={"train_loss": train_loss})
            state["history"].append(record)
            state["metrics"] = {k: v for k, v in record.items() if k != "split"}
            callbacks.event("info", _eval_message(record), type="metrics", data=dict(record))
            save("epoch end")
            if state["stopped_early"]:
                callbacks.event(
                    "info",
                    f"Early stopping: {hparams['selection_metric']} did not improve for "
                    f"{state['bad_epochs']} epochs; "
                    f"keeping step {state['best_step']}.",
                )

        # ---- the final model: best weights, user units, HF directory + aiaas.json ----
        check_stop()
        if state["best_step"] is not None and state["best_step"] != state["step"]:
            checkpoints.load_weights(model, checkpoints.checkpoint_dir(ckpt_root, state["best_step"]))
        model = model.to("cpu")
        best = dict(state["best_metrics"] or {})
        summary = {k: v for k, v in best.items() if k not in ("per_label", "thresholds")}
        summary.update(best_step=state["best_step"])
        meta: dict[str, Any] = {
            "task": task,
            "labels": labels,
            "max_length": max_length,
            "do_lower_case": base.do_lower_case,
            "metrics": summary,
            "base_model": base.id,
            "selection_metric": hparams["selection_metric"],
        }
        if task == "multi_label_classification":
            meta["thresholds"] = best.get("thresholds") or {label: 0.5 for label in labels}
        if scaling is not None:
            folded = artifact.fold_regression_scale(model, scaling["mean"], scaling["std"])
            meta["regression"] = {
                "target_mean": scaling["mean"],
                "target_std": scaling["std"],
                "folded_into_head": folded,
            }
        model_dir = artifact.write_model_dir(work_dir / "model", model=model, tokenizer=tokenizer, meta=meta)
        callbacks.event("info", f"Model written after {state['step']} steps.", data={"metrics": summary})
        return TrainResult(
            model_dir=model_dir,
            metrics=best,
            trained_tokens=int(state["trained_tokens"]),
            steps=int(state["step"]),
            epochs_completed=state["step"] / hp.steps_per_epoch,
            hyperparameters=hparams,
            history=list(state["history"]),
        )


def _evaluate(
    model: Any,
    val: batching.Encoded,
    task: str,
    labels: list[str],
    batch_size: int,
    device: str,
    precision: str,
    loss_fn: Any,
    scaling: dict[str, float] | None,
    check_stop: Any,
    pad_id: int,
) -> dict[str, Any]:
    import torch

    model.eval()
    logits = torch.empty((len(val), model.config.num_labels), dtype=torch.float32)
    with torch.inference_mode():
        for index in batching.sequential_batches(val.lengths, batch_size, max_tokens=EVAL_TOKENS):
            check_stop()
            ids, mask, _ = batching.collate(val.input_ids, index, pad_id)
            with runtime.autocast(device, precision):
                out = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            logits[torch.as_tensor(index)] = out.float().cpu()
        valid_loss = float(loss_fn(logits, torch.as_tensor(val.targets)).item())
    model.train()
    out_np = logits.numpy()
    if task == "single_label_classification":
        scores = metrics.single_label(out_np, val.targets, labels)
    elif task == "multi_label_classification":
        scores = metrics.multi_label(1.0 / (1.0 + np.exp(-out_np)), val.targets, labels)
    else:
        assert scaling is not None
        pred = out_np[:, 0] * scaling["std"] + scaling["mean"]
        scores = metrics.regression(pred, val.targets * scaling["std"] + scaling["mean"])
    return {"valid_loss": valid_loss, **scores}


def _eval_message(record: dict[str, Any]) -> str:
    parts = [f"Epoch {record['epoch']}: train loss {record['train_loss']:.4f}"]
    for key in ("valid_loss", "accuracy", "macro_f1", "micro_f1", "rmse", "mae", "r2"):
        if key in record:
            parts.append(f"{key} {record[key]:.4f}")
    return ", ".join(parts)
