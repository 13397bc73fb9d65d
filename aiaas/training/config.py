"""TrainConfig: what a fine-tuning run was asked to do, checked on construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from aiaas.core.errors import InvalidRequest
from aiaas.protocol.jobs import (
    BATCH_SIZE_BOUNDS,
    FREEZE_LAYERS_BOUNDS,
    LAYERWISE_LR_DECAY_BOUNDS,
    LEARNING_RATE_MULTIPLIER_BOUNDS,
    N_EPOCHS_BOUNDS,
    REINIT_LAYERS_BOUNDS,
)
from aiaas.protocol.tasks import DEFAULT_TASK, TASKS

PRECISIONS = ("auto", "bf16", "fp32")

# Fields that change the numbers a run produces. A checkpoint is only resumed under a
# config that agrees on these; the rest (threads, precision, checkpoint cadence) may
# differ when a job moves to another machine.
RESUME_KEYS = (
    "base_model",
    "task",
    "n_epochs",
    "batch_size",
    "learning_rate",
    "learning_rate_multiplier",
    "seed",
    "max_length",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "early_stopping_patience",
    "class_weights",
    "freeze_embeddings",
    "freeze_layers",
    "layerwise_lr_decay",
    "reinit_layers",
    "reinit_pooler",
)


@dataclass
class TrainConfig:
    base_model: str
    task: str = DEFAULT_TASK
    n_epochs: int | Literal["auto"] = "auto"
    batch_size: int | Literal["auto"] = "auto"
    learning_rate: float | Literal["auto"] = "auto"
    # OpenAI's field: multiplies the learning rate chosen automatically.
    learning_rate_multiplier: float | Literal["auto"] = "auto"
    seed: int = 42
    max_length: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    checkpoint_every_steps: int | None = None  # None: about every 10% of steps, and each epoch
    early_stopping_patience: int | None = 2  # epochs without improvement; None disables
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    num_threads: int | None = None  # None: the cores this process may use
    class_weights: bool = False
    # "auto" freezes the word-embedding matrix on CPU: its gradient is dense, so AdamW rewrites
    # all of its rows (half of MiniLM-L6's parameters) every step. Measured on MiniLM-L6, 1,000
    # sentences, 3 epochs: x1.33 samples/s alone, x1.94 with fused AdamW, validation accuracy
    # unchanged (bench/README.md, "Training"). On CUDA the update is cheap, so nothing is frozen.
    freeze_embeddings: bool | Literal["auto"] = "auto"
    # Embeddings and encoder layers [0, k) frozen, their output computed once per text and cached:
    # each step runs only the upper layers (aiaas.training.frozen_prefix). "auto" decides per model.
    freeze_layers: int | Literal["auto"] = "auto"
    # The small-data recipe (aiaas.training.recipe); "auto" is what hyperparams.resolve measured best.
    layerwise_lr_decay: float | Literal["auto"] = "auto"
    reinit_layers: int | Literal["auto"] = "auto"
    reinit_pooler: bool | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.base_model, str) or not self.base_model.strip():
            raise InvalidRequest(
                "base_model must be a non-empty model name, e.g. 'minilm-l6'.", param="model"
            )
        if self.task not in TASKS:
            raise InvalidRequest(f"task must be one of {', '.join(TASKS)}; got {self.task!r}.", param="task")
        # The bounds a job request has (aiaas.protocol.jobs), checked again for direct callers.
        _int_or_auto(self.n_epochs, "n_epochs", *N_EPOCHS_BOUNDS)
        _int_or_auto(self.batch_size, "batch_size", *BATCH_SIZE_BOUNDS)
        _float_or_auto(self.learning_rate, "learning_rate", 0.0, 0.1)
        _float_or_auto(
            self.learning_rate_multiplier, "learning_rate_multiplier", *LEARNING_RATE_MULTIPLIER_BOUNDS
        )
        if self.learning_rate != "auto" and self.learning_rate_multiplier != "auto":
            raise InvalidRequest(
                "Set either learning_rate or learning_rate_multiplier, not both: the multiplier scales "
                "the automatically chosen learning rate.",
                param="learning_rate_multiplier",
            )
        _int_in(self.seed, "seed", 0, 2**32 - 1)
        _int_in(self.max_length, "max_length", 8, 8192)
        _float_in(self.warmup_ratio, "warmup_ratio", 0.0, 0.5, low_open=False)
        _float_in(self.weight_decay, "weight_decay", 0.0, 1.0, low_open=False)
        _float_in(self.max_grad_norm, "max_grad_norm", 0.0, 1e6)
        if self.checkpoint_every_steps is not None:
            _int_in(self.checkpoint_every_steps, "checkpoint_every_steps", 1, 10**9)
        if self.early_stopping_patience is not None:
            _int_in(self.early_stopping_patience, "early_stopping_patience", 1, 1000)
        if self.precision not in PRECISIONS:
            raise InvalidRequest(
                f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}.",
                param="precision",
            )
        if self.num_threads is not None:
            _int_in(self.num_threads, "num_threads", 1, 1024)
        if not isinstance(self.class_weights, bool):
            raise InvalidRequest("class_weights must be true or false.", param="class_weights")
        if not (self.freeze_embeddings == "auto" or isinstance(self.freeze_embeddings, bool)):
            raise InvalidRequest(
                f"freeze_embeddings must be true, false or 'auto'; got {self.freeze_embeddings!r}.",
                param="freeze_embeddings",
            )
        _int_or_auto(self.freeze_layers, "freeze_layers", *FREEZE_LAYERS_BOUNDS)
        low, high = LAYERWISE_LR_DECAY_BOUNDS
        if self.layerwise_lr_decay != "auto":
            _float_in(self.layerwise_lr_decay, "layerwise_lr_decay", low, high)
        _int_or_auto(self.reinit_layers, "reinit_layers", *REINIT_LAYERS_BOUNDS)
        if not (self.reinit_pooler == "auto" or isinstance(self.reinit_pooler, bool)):
            raise InvalidRequest(
                f"reinit_pooler must be true, false or 'auto'; got {self.reinit_pooler!r}.",
                param="reinit_pooler",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidRequest(
                f"Unknown training option(s): {', '.join(unknown)}. Allowed: {', '.join(sorted(known))}.",
                param=unknown[0],
            )
        return cls(**data)

    def resume_view(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in RESUME_KEYS}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(value: Any, name: str, low: int, high: int) -> None:
    if not _is_int(value) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}; got {value!r}.", param=name)


def _int_or_auto(value: Any, name: str, low: int, high: int) -> None:
    if value == "auto":
        return
    if not _is_int(value) or not low <= value <= high:
        raise InvalidRequest(
            f"{name} must be 'auto' or an integer from {low} to {high}; got {value!r}.", param=name
        )


def _float_in(value: Any, name: str, low: float, high: float, *, low_open: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = ">" if low_open else ">="
        raise InvalidRequest(
            f"{name} must be a number {bound} {low} and <= {high}; got {value!r}.", param=name
        )


def _float_or_auto(value: Any, name: str, low: float, high: float) -> None:
    if value == "auto":
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low < value <= high
    if not ok:
        raise InvalidRequest(
            f"{name} must be 'auto' or a number > {low} and <= {high}; got {value!r}.", param=name
        )
