"""Building blocks train() assembles: data checks, tokenizer and model loading, optimizer
parameter groups, losses, and the checks that make resuming safe.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.core.errors import Conflict, InvalidRequest
from aiaas.training import batching, frozen_prefix, recipe
from aiaas.training.base_models import (
    MINILM_ID,
    ResolvedBaseModel,
    builtin_minilm_dir,
    inspect_model_dir,
    resolve_base_model,
)
from aiaas.training.config import TrainConfig
from aiaas.training.hyperparams import ResolvedHyperparameters
from aiaas.training.types import PreparedDataLike


def check_data(config: TrainConfig, data: PreparedDataLike) -> list[str]:
    if data.task != config.task:
        raise InvalidRequest(
            f"The dataset was prepared for {data.task} but training asks for {config.task}; "
            "prepare the data for the same task.",
            param="task",
        )
    if not data.train:
        raise InvalidRequest(
            "The training set is empty; upload a file with labelled rows.", param="training_file"
        )
    labels = list(data.labels)
    if config.task == "regression":
        return labels[:1] or ["value"]
    if config.task == "single_label_classification" and len(labels) < 2:
        raise InvalidRequest(
            f"Single-label classification needs at least 2 labels; the data has {labels}.",
            param="training_file",
        )
    if not labels:
        raise InvalidRequest("Multi-label classification needs at least 1 label.", param="training_file")
    return labels


def resolve(name: str, base_models_dir: Path | None) -> ResolvedBaseModel:
    path = Path(name)
    if path.is_absolute() and path.is_dir():  # already resolved by the caller (trusted)
        builtin = builtin_minilm_dir()
        model_id = MINILM_ID if builtin is not None and path.resolve() == builtin.resolve() else path.name
        return inspect_model_dir(path, model_id=model_id)
    return resolve_base_model(name, base_models_dir=base_models_dir)


def load_tokenizer(base: ResolvedBaseModel) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(base.path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"Base model '{base.id}' has no usable tokenizer: {exc}", param="model") from exc


def load_model(base: ResolvedBaseModel, task: str, labels: list[str]) -> Any:
    import torch
    from transformers import AutoModelForSequenceClassification

    try:
        return AutoModelForSequenceClassification.from_pretrained(
            str(base.path),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            problem_type=task,  # our task names are transformers' problem_type values
            ignore_mismatched_sizes=True,  # an installed model may carry another head
            dtype=torch.float32,  # master weights fp32; bf16 only inside autocast
            use_safetensors=True,  # never fall back to pickle weights
            local_files_only=True,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidRequest(
            f"Base model '{base.id}' cannot be loaded as a sequence classifier: {exc}", param="model"
        ) from exc


def max_length(requested: int, base: ResolvedBaseModel, tokenizer: Any) -> int:
    limit = requested
    try:
        positions = json.loads((base.path / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        positions = None
    if isinstance(positions, int) and positions > 0:
        limit = min(limit, positions)
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 100_000:  # HF uses 1e30 for "no limit"
        limit = min(limit, model_max)
    return limit


# "auto" freezes the word embeddings only where their update is a big part of a step: on CPU,
# and when the matrix holds at least this share of the parameters (MiniLM-L6: 52%, its 30,522
# x 384 rows; bert-base: 21%, where the encoder's compute dominates and nothing is frozen).
FREEZE_MIN_SHARE = 1 / 3


def freeze_embeddings(config: TrainConfig, model: Any, device: str) -> tuple[bool, str]:
    """Freeze the word-embedding matrix when asked (or, for "auto", when it pays); returns (frozen, why)."""
    weight = model.get_input_embeddings().weight
    share = weight.numel() / max(1, sum(p.numel() for p in model.parameters()))
    if config.freeze_embeddings != "auto":
        freeze, why = bool(config.freeze_embeddings), "requested"
    elif device != "cpu":
        freeze, why = False, f"auto: on {device} the embedding update is cheap; trained"
    elif share < FREEZE_MIN_SHARE:
        freeze, why = False, f"auto: word embeddings are {share:.0%} of the parameters; trained"
    else:
        freeze = True
        why = (
            f"auto: word embeddings are {share:.0%} of the parameters and their gradient is dense, so "
            "on CPU updating them cost a third of each step; frozen"
        )
    if freeze:
        weight.requires_grad_(False)
    return freeze, why


def optimizer(
    model: Any, config: TrainConfig, lr: float, device: str, *, fused: bool = True, lr_decay: float = 1.0
) -> tuple[Any, bool]:
    """AdamW over the trainable parameters (layer-wise learning rates with `lr_decay` < 1); the fused
    kernel where this torch has it for the device (and `fused` is not switched off).
    Returns (optimizer, whether it is fused)."""
    import torch

    groups = recipe.param_groups(model, config.weight_decay, lr_decay)
    adamw, is_fused = None, False
    if fused:
        try:
            adamw, is_fused = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True), True
        except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device/dtype
            pass
    if adamw is None:
        adamw = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    recipe.scale_learning_rates(adamw, lr)
    return adamw, is_fused


def model_and_optimizer(
    config: TrainConfig,
    base: ResolvedBaseModel,
    labels: list[str],
    hp: ResolvedHyperparameters,
    device: str,
    hparams: dict[str, Any],
) -> tuple[Any, Any, Any]:
    """The model with its new head, the optimizer and the learning-rate schedule; the choices made on
    the way (embeddings frozen, fused optimizer) go into `hparams` with their reasons."""
    import torch

    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)  # the new head's init is reproducible
    model = load_model(base, config.task, labels).to(device)
    if hp.reinit_pooler or hp.reinit_layers:
        hparams["reinitialised"] = recipe.reinit_top(model, pooler=hp.reinit_pooler, layers=hp.reinit_layers)
    frozen, frozen_why = freeze_embeddings(config, model, device)
    # Before the optimizer: it holds (and checkpoints) state only for what still trains.
    k, k_why = frozen_prefix.resolve(config, model, hp.reinit_layers)
    if k:
        frozen_prefix.freeze(model, k)
    hparams["freeze_layers"] = hp.freeze_layers = k
    hparams.setdefault("reasons", {})["freeze_layers"] = hp.reasons["freeze_layers"] = k_why
    adamw, fused = optimizer(model, config, hp.learning_rate, device, lr_decay=hp.layerwise_lr_decay)
    hparams["freeze_embeddings"], hparams["fused_optimizer"] = frozen, fused
    hparams.setdefault("reasons", {})["freeze_embeddings"] = frozen_why
    lr_factor = warmup_then_linear_decay(hp.warmup_steps, hp.total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(adamw, lr_factor)
    return model, adamw, scheduler


def loss_fn(task: str, y_train: np.ndarray, n_labels: int, weighted: bool, device: str) -> Any:
    import torch
    import torch.nn.functional as F

    if task == "single_label_classification":
        weight = None
        if weighted:  # inverse frequency, so rare classes count as much as common ones
            counts = np.bincount(y_train, minlength=n_labels).clip(min=1)
            weight = torch.tensor(
                len(y_train) / (n_labels * counts), dtype=torch.float32, device=device
            ).clamp(0.1, 10)
        return lambda logits, y: F.cross_entropy(logits, y, weight=weight)
    if task == "multi_label_classification":
        pos_weight = None
        if weighted:  # negatives per positive, per label
            pos = y_train.sum(axis=0).clip(min=1)
            neg = (len(y_train) - y_train.sum(axis=0)).clip(min=1)
            pos_weight = torch.tensor(neg / pos, dtype=torch.float32, device=device).clamp(0.1, 10)
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)
    return lambda logits, y: F.mse_loss(logits.squeeze(-1), y)


def fingerprint(task: str, labels: list[str], data: PreparedDataLike) -> str:
    digest = hashlib.sha256(json.dumps([task, labels]).encode())
    for split in (data.train, data.validation):
        for ex in split:
            digest.update(json.dumps([ex.text, ex.label]).encode())
        digest.update(b"|")
    return digest.hexdigest()


def check_resumable(saved: dict[str, Any], config: TrainConfig, fingerprint: str, root: Path) -> None:
    before = TrainConfig.from_dict(saved["config"]).resume_view()
    changed = sorted(k for k, v in config.resume_view().items() if before.get(k) != v)
    if changed or saved.get("fingerprint") != fingerprint:
        what = f"settings ({', '.join(changed)})" if changed else "data"
        raise Conflict(
            f"{root} holds checkpoints of a run with different {what}; resume with the same job, "
            "or clear that directory to start over."
        )


@dataclass
class TokenizedSplits:
    """The tokenized splits, and how regression targets were standardized."""

    tokenizer: Any
    max_length: int
    train: batching.Encoded
    validation: batching.Encoded
    scaling: dict[str, float] | None  # regression only: {"mean", "std"} of the training targets


def tokenize_splits(
    config: TrainConfig,
    data: PreparedDataLike,
    base: ResolvedBaseModel,
    labels: list[str],
    check_stop: Callable[[], None],
) -> TokenizedSplits:
    """Tokenize once, without padding: batches pad to their own longest text."""
    task = config.task
    tokenizer = load_tokenizer(base)
    limit = max_length(config.max_length, base, tokenizer)
    y_train = batching.encode_targets(task, [ex.label for ex in data.train], labels, split="train")
    y_val = batching.encode_targets(task, [ex.label for ex in data.validation], labels, split="validation")
    scaling: dict[str, float] | None = None
    if task == "regression":
        # Standardized targets keep the MSE gradients sane whatever the user's units.
        mean, std = float(y_train.mean()), float(y_train.std()) or 1.0
        scaling = {"mean": mean, "std": std}
        y_train, y_val = (y_train - mean) / std, (y_val - mean) / std

    def encode(examples: Any, targets: np.ndarray) -> batching.Encoded:
        texts = [ex.text for ex in examples]
        return batching.Encoded(batching.tokenize(tokenizer, texts, limit, check_stop=check_stop), targets)

    return TokenizedSplits(
        tokenizer, limit, encode(data.train, y_train), encode(data.validation, y_val), scaling
    )


def warmup_then_linear_decay(warmup: int, total: int) -> Callable[[int], float]:
    """The learning-rate factor of step `s` for LambdaLR."""

    def lr_factor(s: int) -> float:  # linear warmup to the peak, then linear decay to 0
        if s < warmup:
            return (s + 1) / warmup
        return max(0.0, (total - s) / max(1, total - warmup))

    return lr_factor
