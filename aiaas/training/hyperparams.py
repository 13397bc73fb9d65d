"""Turn "auto" hyperparameters into numbers that work on small data, with the reasons why.

Measured on this project's machines: MiniLM-L6 given ~60 optimizer steps learned
nothing at lr 5e-5 but did at 1e-4..2e-4. Small models on small data therefore get a
high learning rate and enough epochs for ~150 optimizer steps; bigger models get the
lower rates their fine-tuning recipes use.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from aiaas.training.config import TrainConfig

TARGET_STEPS = 150  # optimizer steps a small dataset should get in total
MIN_AUTO_EPOCHS = 3
MAX_AUTO_EPOCHS = 20
LARGE_DATA = 2000  # examples: from here on batches of 32
HUGE_DATA = 20_000  # examples: from here on the learning rate is halved (many steps anyway)
SMALL_MODEL = 40_000_000  # parameters (MiniLM-L6: 22.7M; BERT-base: 110M)
BASE_MODEL = 150_000_000
# The small-data recipe's "auto" (aiaas.training.recipe): off, as the seed-repeated A/B left it
# (bench/results/quality_recipe.json; bench/README.md, "Transformer recipe").
AUTO_LAYERWISE_LR_DECAY = 1.0
AUTO_REINIT_LAYERS = 0
AUTO_REINIT_POOLER = False
RECIPE_WHY = "auto: off (the small-data A/B: bench/README.md, Transformer recipe for small data)"


@dataclass
class ResolvedHyperparameters:
    """The numbers a run uses once every "auto" is decided (the request's shape, with its bounds,
    is aiaas.protocol.jobs.Hyperparameters)."""

    n_epochs: int
    batch_size: int
    learning_rate: float
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    checkpoint_every_steps: int
    layerwise_lr_decay: float = 1.0
    reinit_layers: int = 0
    reinit_pooler: bool = False
    freeze_layers: int = 0  # decided with the model loaded (aiaas.training.frozen_prefix.resolve)
    precision: str = "fp32"
    num_threads: int = 1
    device: str = "cpu"
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def auto_batch_size(n_train: int) -> tuple[int, str]:
    if n_train < LARGE_DATA:
        return 16, f"auto: {n_train} training examples (< {LARGE_DATA}) -> 16 for more optimizer steps"
    return 32, f"auto: {n_train} training examples (>= {LARGE_DATA}) -> 32 for throughput"


def auto_epochs(steps_per_epoch: int) -> tuple[int, str]:
    wanted = math.ceil(TARGET_STEPS / max(1, steps_per_epoch))
    epochs = min(MAX_AUTO_EPOCHS, max(MIN_AUTO_EPOCHS, wanted))
    return epochs, (
        f"auto: {steps_per_epoch} steps per epoch; ~{TARGET_STEPS} optimizer steps wanted, "
        f"epochs kept within {MIN_AUTO_EPOCHS}..{MAX_AUTO_EPOCHS}"
    )


def auto_learning_rate(n_train: int, num_parameters: int | None, hidden_size: int) -> tuple[float, str]:
    # Without a parameter count, the hidden size tells small from big well enough.
    params = (
        num_parameters if num_parameters is not None else (20_000_000 if hidden_size <= 512 else 110_000_000)
    )
    if params <= SMALL_MODEL:
        lr, size = 2e-4, "small"
    elif params <= BASE_MODEL:
        lr, size = 5e-5, "base-sized"
    else:
        lr, size = 2e-5, "large"
    why = f"auto: {size} model ({params / 1e6:.1f}M parameters)"
    if n_train >= HUGE_DATA:
        lr /= 2
        why += f", halved for {n_train} examples (>= {HUGE_DATA})"
    return lr, why


def resolve(
    config: TrainConfig,
    *,
    n_train: int,
    num_parameters: int | None,
    hidden_size: int,
) -> ResolvedHyperparameters:
    """Resolve every "auto" of `config` for a training set of `n_train` examples."""
    reasons: dict[str, str] = {}
    if config.batch_size == "auto":
        batch_size, reasons["batch_size"] = auto_batch_size(n_train)
    else:
        batch_size, reasons["batch_size"] = int(config.batch_size), "requested"
    steps_per_epoch = max(1, math.ceil(n_train / batch_size))

    if config.n_epochs == "auto":
        n_epochs, reasons["n_epochs"] = auto_epochs(steps_per_epoch)
    else:
        n_epochs, reasons["n_epochs"] = int(config.n_epochs), "requested"

    if config.learning_rate == "auto":
        learning_rate, reasons["learning_rate"] = auto_learning_rate(n_train, num_parameters, hidden_size)
        if config.learning_rate_multiplier != "auto":
            learning_rate *= float(config.learning_rate_multiplier)
            reasons["learning_rate"] += f", times learning_rate_multiplier {config.learning_rate_multiplier}"
    else:
        learning_rate, reasons["learning_rate"] = float(config.learning_rate), "requested"

    total_steps = n_epochs * steps_per_epoch
    warmup_steps = math.ceil(config.warmup_ratio * total_steps)
    if config.checkpoint_every_steps is None:
        every = max(1, math.ceil(total_steps / 10))
        reasons["checkpoint_every_steps"] = (
            "auto: about every 10% of the steps but at most once a minute, and at each epoch end"
        )
    else:
        every = config.checkpoint_every_steps
        reasons["checkpoint_every_steps"] = "requested (and at each epoch end)"
    recipe: dict[str, Any] = {}
    for key, auto in (
        ("layerwise_lr_decay", AUTO_LAYERWISE_LR_DECAY),
        ("reinit_layers", AUTO_REINIT_LAYERS),
        ("reinit_pooler", AUTO_REINIT_POOLER),
    ):
        value = getattr(config, key)
        recipe[key], reasons[key] = (auto, RECIPE_WHY) if value == "auto" else (value, "requested")
    return ResolvedHyperparameters(
        n_epochs=n_epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        checkpoint_every_steps=every,
        layerwise_lr_decay=float(recipe["layerwise_lr_decay"]),
        reinit_layers=int(recipe["reinit_layers"]),
        reinit_pooler=bool(recipe["reinit_pooler"]),
        reasons=reasons,
    )
