"""train(): the one fine-tuning loop.

`train()` reads top to bottom: data, hyperparameters, model and optimizer, resume, the epochs,
the final model. The pieces it names live below it in the same order: `_hyperparameters` and
`_Trainer` (resume, one epoch of steps, the end-of-epoch evaluation, checkpoints, the final
model), moving a `checkpoints.RunState`, everything a checkpoint must carry to continue a run.
Building blocks (tokenizing the splits, the schedule, losses) are in `components`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.core.errors import InvalidRequest
from aiaas.training import (
    artifact,
    batching,
    checkpoints,
    components,
    frozen_prefix,
    hyperparams,
    metrics,
    runtime,
)
from aiaas.training.base_models import ResolvedBaseModel
from aiaas.training.checkpoints import RunState
from aiaas.training.config import TrainConfig
from aiaas.training.hyperparams import ResolvedHyperparameters
from aiaas.training.types import PreparedDataLike, TrainCallbacks, TrainingStopped, TrainResult

logger = logging.getLogger(__name__)

LOGS_PER_RUN = 50  # train-metrics events over a whole run (at most one per step)
# With the automatic cadence, periodic (mid-epoch) checkpoints are at least this far apart: a
# save (weights, optimizer, RNG, fsync) costs ~0.5 s for MiniLM-L6, ~13 of them were 10% of a
# 1,000-sentence run, and a lost worker then redoes at most a minute plus 10% of the steps.
PERIODIC_MIN_SECONDS = 60.0
# A stop request (the worker shutting down, not a cancel) saves a checkpoint at the current step when
# the time left allows twice the last save's duration (this guess before the run's first save) plus
# a margin for releasing the lease; otherwise it stops without one and says so.
STOP_SAVE_GUESS_S = 2.0
STOP_SAVE_MARGIN_S = 1.0
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
    work_dir = Path(work_dir)
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
        sets = components.tokenize_splits(config, data, base, labels, check_stop)

        # ---- hyperparameters: resolve every "auto", with reasons ----
        hp, hparams = _hyperparameters(config, base, sets, device, precision, precision_why, threads)

        # ---- model, optimizer, schedule (seeded: the new head's init is reproducible) ----
        model, optimizer, scheduler = components.model_and_optimizer(config, base, labels, hp, device, hparams)

        # ---- frozen lower layers: their output for every text computed once (unchanged on resume) ----
        prefix = frozen_prefix.setup(
            model, hp.freeze_layers, sets, device, precision, check_stop, callbacks.event
        )
        trainer = _Trainer(
            config, callbacks, check_stop, work_dir, base, labels, sets, hp, device, precision,
            model, optimizer, scheduler, prefix,
        )  # fmt: skip

        # ---- resume from the latest checkpoint, or start fresh ----
        fingerprint = components.fingerprint(config.task, labels, data)
        state = trainer.resume(fingerprint, threads)
        if state is None:
            state = RunState(config=config.to_dict(), hyperparameters=hparams, fingerprint=fingerprint)
            trainer.announce_start(state, threads)

        # ---- the loop: epochs of steps; each epoch ends with evaluation and a checkpoint ----
        trainer.begin()
        while state.epoch < hp.n_epochs and not state.stopped_early:
            trainer.run_epoch(state)
            trainer.end_epoch(state)

        # ---- the final model: best weights, user units, HF directory + aiaas.json ----
        return trainer.finish(state)


def _hyperparameters(
    config: TrainConfig,
    base: ResolvedBaseModel,
    sets: components.TokenizedSplits,
    device: str,
    precision: str,
    precision_why: str,
    threads: int,
) -> tuple[ResolvedHyperparameters, dict[str, Any]]:
    """The resolved numbers the loop uses, and the dict of everything a run reports about them."""
    hp = hyperparams.resolve(
        config, n_train=len(sets.train), num_parameters=base.num_parameters, hidden_size=base.hidden_size
    )
    hp.precision, hp.num_threads, hp.device = precision, threads, device
    hp.reasons["precision"] = precision_why
    hp.reasons["num_threads"] = "requested" if config.num_threads else "auto: cores this process may use"
    return hp, {
        **hp.to_dict(),
        "max_length": sets.max_length,
        "warmup_ratio": config.warmup_ratio,
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "early_stopping_patience": config.early_stopping_patience,
        "class_weights": config.class_weights,
        "seed": config.seed,
        "selection_metric": metrics.SELECTION[config.task][0],
        "omp_wait_policy_passive": runtime.omp_passive_in_effect(),
    }


@dataclass
class _Window:
    """Training loss and throughput since the last train-metrics event."""

    loss: float = 0.0
    steps: int = 0
    samples: int = 0
    tokens: int = 0
    t0: float = field(default_factory=time.perf_counter)

    def pause(self, started: float) -> None:
        """Leave the time since `started` (a save, an evaluation) out: throughput counts training only."""
        self.t0 += time.perf_counter() - started


class _Trainer:
    """The parts of one run that do not change while it runs, and the steps that move a RunState."""

    def __init__(
        self,
        config: TrainConfig,
        callbacks: TrainCallbacks,
        check_stop: Callable[[], None],
        work_dir: Path,
        base: ResolvedBaseModel,
        labels: list[str],
        sets: components.TokenizedSplits,
        hp: ResolvedHyperparameters,
        device: str,
        precision: str,
        model: Any,
        optimizer: Any,
        scheduler: Any,
        prefix: frozen_prefix.FrozenPrefix | None = None,
    ) -> None:
        self.config, self.task, self.callbacks, self.check_stop = config, config.task, callbacks, check_stop
        self.work_dir, self.ckpt_root = work_dir, work_dir / "checkpoints"
        self.base, self.labels, self.sets, self.hp = base, labels, sets, hp
        self.device, self.precision = device, precision
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        # With cached states, steps and evaluation run only the layers above the frozen prefix.
        self.cached = prefix if prefix is not None and prefix.cached else None
        y_train, n_labels = sets.train.targets, len(labels)
        self.loss_fn = components.loss_fn(self.task, y_train, n_labels, config.class_weights, device)
        # Validation loss is never class-weighted: it stays comparable between runs.
        self.eval_loss_fn = components.loss_fn(self.task, y_train, n_labels, False, device)
        self.last_save = time.monotonic()
        self.saved_step: int | None = None  # the step of the newest checkpoint on disk
        self.save_seconds: float | None = None  # how long the last save took
        self.log_every = max(1, hp.total_steps // LOGS_PER_RUN)
        self.window = _Window()

    # ---- start ----

    def resume(self, fingerprint: str, threads: int) -> RunState | None:
        """Load the latest checkpoint into model, optimizer, scheduler and RNGs; None if there is none."""
        checkpoints.remove_partial(self.ckpt_root)
        latest = checkpoints.latest_checkpoint(self.ckpt_root)
        if latest is None:
            return None
        saved = checkpoints.load_checkpoint(latest)
        components.check_resumable(saved["state"], self.config, fingerprint, self.ckpt_root)
        checkpoints.load_weights(self.model, latest)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        checkpoints.set_rng_state(saved["state"].pop("rng"))
        state = RunState.from_dict(saved["state"])
        self.saved_step = state.step
        # The machine may differ from the one that saved: these two describe this one.
        state.hyperparameters = {**state.hyperparameters, "num_threads": threads, "precision": self.precision}
        self.callbacks.event(
            "info", f"Resumed from checkpoint at step {state.step}.", data={"step": state.step}
        )
        return state

    def announce_start(self, state: RunState, threads: int) -> None:
        hp, n_train, n_val = self.hp, len(self.sets.train), len(self.sets.validation)
        self.callbacks.event(
            "info",
            f"Fine-tuning {self.base.id} ({self.task}) on {n_train} examples ({n_val} for validation): "
            f"{hp.n_epochs} epochs x {hp.steps_per_epoch} steps, batch {hp.batch_size}, "
            f"lr {hp.learning_rate:g}, {self.precision}, {threads} threads.",
            data={"hyperparameters": state.hyperparameters},
        )
        if n_val == 0:
            self.callbacks.event("warning", "No validation examples: no evaluation, no early stopping.")

    def begin(self) -> None:
        self.last_save = time.monotonic()
        self.window = _Window()
        self.model.train()

    # ---- an epoch of optimizer steps ----

    def run_epoch(self, state: RunState) -> None:
        """The epoch's remaining batches (all of them, unless it was cut by a checkpoint resume)."""
        batches = batching.epoch_batches(
            self.sets.train.lengths, self.hp.batch_size, seed=self.config.seed, epoch=state.epoch
        )
        for index in batches[state.batch_in_epoch :]:
            self._stop_point(state)
            self.step(state, index)
            if state.batch_in_epoch < len(batches) and self._periodic_save_due(state):
                self.save(state, "periodic")
        self._stop_point(state)  # before the epoch's end mutates the state: a resume runs that end

    def _stop_point(self, state: RunState) -> None:
        """Between two steps: on a stop request, keep the progress first if the caller asks for it."""
        if self.callbacks.should_stop():
            self._save_before_stop(state)
            self.check_stop()

    def _save_before_stop(self, state: RunState) -> None:
        """The same checkpoint a periodic save writes, at this step, when the caller gives the time for it.

        Callbacks without `seconds_to_save_before_stop` (or returning None: a cancel, a lost lease)
        stop without saving."""
        budget = getattr(self.callbacks, "seconds_to_save_before_stop", None)
        left = budget() if callable(budget) else None
        if left is None or state.step == 0 or state.step == self.saved_step:
            return
        need = STOP_SAVE_MARGIN_S + 2 * (self.save_seconds or STOP_SAVE_GUESS_S)
        if left < need:
            message = (f"Stopping without a checkpoint at step {state.step}: {max(0.0, left):.1f} s left before "
                       f"the worker exits, a save needs about {need:.1f} s; the job resumes from step "
                       f"{self.saved_step or 0}.")
            logger.warning(message)
            self.callbacks.event("warning", message, data={"step": state.step})
            return
        self.save(state, "stop")
        self.callbacks.event(
            "info", f"Stopping: checkpoint saved at step {state.step} for resuming.", data={"step": state.step}
        )

    def step(self, state: RunState, index: np.ndarray) -> None:
        """One optimizer step on the examples at `index`."""
        import torch

        train_set, device = self.sets.train, self.device
        target = torch.as_tensor(train_set.targets[index]).to(device)
        n_tokens = sum(len(train_set.input_ids[i]) for i in index)
        with runtime.autocast(device, self.precision):
            if self.cached:
                logits = self.cached.logits("train", index, device)
            else:
                ids, mask, _ = batching.collate(train_set.input_ids, index, self.sets.tokenizer.pad_token_id)
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        loss = self.loss_fn(logits.float(), target)
        loss_value = float(loss.item())
        if not math.isfinite(loss_value):
            raise InvalidRequest(
                f"Training diverged: the loss became {loss_value} at step {state.step + 1}. "
                "Lower learning_rate (or learning_rate_multiplier), or set precision to fp32."
            )
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

        state.step += 1
        state.batch_in_epoch += 1
        state.trained_tokens += n_tokens
        state.epoch_loss_sum += loss_value
        state.epoch_loss_count += 1
        window = self.window
        window.loss += loss_value
        window.steps += 1
        window.samples += len(index)
        window.tokens += n_tokens
        if state.step % self.log_every == 0:
            self._log_step(state, lr, float(grad_norm))

    def _log_step(self, state: RunState, lr: float, grad_norm: float) -> None:
        window, hp = self.window, self.hp
        elapsed = max(1e-9, time.perf_counter() - window.t0)
        record = {
            "split": "train",
            "step": state.step,
            "epoch": round(state.step / hp.steps_per_epoch, 4),
            "loss": window.loss / window.steps,
            "learning_rate": lr,
            "grad_norm": grad_norm,
            "samples_per_second": window.samples / elapsed,
            "tokens_per_second": window.tokens / elapsed,
            "total_steps": hp.total_steps,
        }
        state.history.append(record)
        state.metrics = {"loss": record["loss"]}
        self.callbacks.event(
            "info",
            f"Step {state.step}/{hp.total_steps}: loss {record['loss']:.4f}",
            type="metrics",
            data=record,
        )
        self.window = _Window()

    def _periodic_save_due(self, state: RunState) -> bool:
        # A requested cadence is kept exactly; the automatic one also waits PERIODIC_MIN_SECONDS.
        return state.step % self.hp.checkpoint_every_steps == 0 and (
            self.config.checkpoint_every_steps is not None
            or time.monotonic() - self.last_save >= PERIODIC_MIN_SECONDS
        )

    # ---- end of epoch: evaluate, track the best, maybe stop early, checkpoint ----

    def end_epoch(self, state: RunState) -> None:
        train_loss = state.epoch_loss_sum / max(1, state.epoch_loss_count)
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        state.epoch_loss_sum, state.epoch_loss_count = 0.0, 0
        record: dict[str, Any] = {
            "split": "validation",
            "step": state.step,
            "epoch": state.epoch,
            "loss": train_loss,
            "train_loss": train_loss,
            "learning_rate": self.scheduler.get_last_lr()[0],
        }
        if len(self.sets.validation):
            self.check_stop()
            started = time.perf_counter()
            scores = self.evaluate()
            self.window.pause(started)
            record.update({k: v for k, v in scores.items() if k != "per_label"})
            self._track_best(state, scores)
        else:  # nothing to compare: the latest weights are the best there are
            state.best_step, state.best_metrics = state.step, {"train_loss": train_loss}
        state.history.append(record)
        state.metrics = {k: v for k, v in record.items() if k != "split"}
        self.callbacks.event("info", _eval_message(record), type="metrics", data=dict(record))
        self.save(state, "epoch end")
        if state.stopped_early:
            self.callbacks.event(
                "info",
                f"Early stopping: {state.hyperparameters['selection_metric']} did not improve for "
                f"{state.bad_epochs} epochs; keeping step {state.best_step}.",
            )

    def _track_best(self, state: RunState, scores: dict[str, Any]) -> None:
        score = metrics.selection_score(self.task, scores)
        if state.best_score is None or tuple(score) > tuple(state.best_score):
            state.best_score, state.best_step, state.best_metrics = list(score), state.step, scores
            state.bad_epochs = 0
            return
        state.bad_epochs += 1
        patience = self.config.early_stopping_patience
        if patience is not None and state.bad_epochs >= patience:
            state.stopped_early = True

    def evaluate(self) -> dict[str, Any]:
        """Validation loss and the task's metrics, in the user's units."""
        import torch

        model, val, device, scaling = self.model, self.sets.validation, self.device, self.sets.scaling
        batch_size = self.hp.batch_size * 2
        model.eval()
        logits = torch.empty((len(val), model.config.num_labels), dtype=torch.float32)
        with torch.inference_mode():
            for index in batching.sequential_batches(val.lengths, batch_size, max_tokens=EVAL_TOKENS):
                self.check_stop()
                with runtime.autocast(device, self.precision):
                    if self.cached:
                        out = self.cached.logits("validation", index, device)
                    else:
                        pad_id = self.sets.tokenizer.pad_token_id
                        ids, mask, _ = batching.collate(val.input_ids, index, pad_id)
                        out = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                logits[torch.as_tensor(index)] = out.float().cpu()
            valid_loss = float(self.eval_loss_fn(logits, torch.as_tensor(val.targets)).item())
        model.train()
        out_np = logits.numpy()
        if self.task == "single_label_classification":
            scores = metrics.single_label(out_np, val.targets, self.labels)
        elif self.task == "multi_label_classification":
            scores = metrics.multi_label(1.0 / (1.0 + np.exp(-out_np)), val.targets, self.labels)
        else:
            assert scaling is not None
            pred = out_np[:, 0] * scaling["std"] + scaling["mean"]
            scores = metrics.regression(pred, val.targets * scaling["std"] + scaling["mean"])
        return {"valid_loss": valid_loss, **scores}

    # ---- checkpoints ----

    def save(self, state: RunState, reason: str) -> None:
        started = time.perf_counter()
        self.last_save = time.monotonic()
        path = checkpoints.save_checkpoint(
            self.ckpt_root,
            state.step,
            model=self.model,
            tokenizer=self.sets.tokenizer,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            state=state.to_dict(),
        )
        checkpoints.prune(self.ckpt_root, keep={state.best_step} if state.best_step is not None else set())
        self.saved_step, self.save_seconds = state.step, time.perf_counter() - started
        self.callbacks.checkpoint(state.step, path, dict(state.metrics))
        logger.debug("Checkpoint %s (%s, %.2f s)", path, reason, self.save_seconds)
        self.window.pause(started)

    # ---- the final model ----

    def finish(self, state: RunState) -> TrainResult:
        """Best weights back in, regression scale folded into the head, HF directory + aiaas.json."""
        self.check_stop()
        model = self.model
        if state.best_step is not None and state.best_step != state.step:
            checkpoints.load_weights(model, checkpoints.checkpoint_dir(self.ckpt_root, state.best_step))
        model = model.to("cpu")
        best = dict(state.best_metrics or {})
        summary = {k: v for k, v in best.items() if k not in ("per_label", "thresholds")}
        summary.update(best_step=state.best_step)
        meta: dict[str, Any] = {
            "task": self.task,
            "labels": self.labels,
            "max_length": self.sets.max_length,
            "do_lower_case": self.base.do_lower_case,
            "metrics": summary,
            "base_model": self.base.id,
            "selection_metric": state.hyperparameters["selection_metric"],
        }
        if self.task == "multi_label_classification":
            meta["thresholds"] = best.get("thresholds") or {label: 0.5 for label in self.labels}
        scaling = self.sets.scaling
        if scaling is not None:
            folded = artifact.fold_regression_scale(model, scaling["mean"], scaling["std"])
            meta["regression"] = {
                "target_mean": scaling["mean"],
                "target_std": scaling["std"],
                "folded_into_head": folded,
            }
        model_dir = artifact.write_model_dir(
            self.work_dir / "model", model=model, tokenizer=self.sets.tokenizer, meta=meta
        )
        self.callbacks.event("info", f"Model written after {state.step} steps.", data={"metrics": summary})
        return TrainResult(
            model_dir=model_dir,
            metrics=best,
            trained_tokens=int(state.trained_tokens),
            steps=int(state.step),
            epochs_completed=state.step / self.hp.steps_per_epoch,
            hyperparameters=state.hyperparameters,
            history=list(state.history),
        )


def _eval_message(record: dict[str, Any]) -> str:
    parts = [f"Epoch {record['epoch']}: train loss {record['train_loss']:.4f}"]
    for key in ("valid_loss", "accuracy", "macro_f1", "micro_f1", "rmse", "mae", "r2"):
        if key in record:
            parts.append(f"{key} {record[key]:.4f}")
    return ", ".join(parts)
