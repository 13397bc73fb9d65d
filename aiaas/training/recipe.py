"""Small-data fine-tuning options (issue #17 item 4): layer-wise learning-rate decay and re-initialising
the top of the encoder.

Both are off unless asked for: the seed-repeated A/B in bench/quality/recipe.py (results in
bench/results/quality_recipe.json and bench/README.md, "Transformer recipe") decides what "auto" means.

- `layerwise_lr_decay` d < 1 (Howard & Ruder 2018; Sun et al. 2019): the head, the pooler and the top
  encoder layer train at the learning rate, each layer below at d times the one above, the embeddings
  below the lowest layer.
- `reinit_pooler` / `reinit_layers` k (Zhang et al. 2021, "Revisiting few-sample BERT fine-tuning"):
  draw the pooler and the top k encoder layers afresh, as pre-training initialised them, before training.
"""

from __future__ import annotations

import re
from typing import Any

from aiaas.core.errors import InvalidRequest

# An encoder layer's parameters: BERT-likes name them "...encoder.layer.3....", others "...layers.3....".
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|block|h)\.(\d+)\.")
_LAYER_MODULE = re.compile(r"(?:^|\.)(?:layer|layers|block|h)\.(\d+)$")
_EMBEDDINGS = re.compile(r"(?:^|\.)embeddings?\.|(?:^|\.)(?:wte|wpe|embed_tokens)\.")


def num_layers(model: Any) -> int:
    n = getattr(model.config, "num_hidden_layers", None)
    if not isinstance(n, int) or n < 1:
        raise InvalidRequest("The base model does not say how many layers it has.", param="model")
    return n


def depth_of(name: str, n_layers: int) -> int:
    """How far below the top a parameter sits: 0 for the head, pooler and top layer, n_layers for
    the embeddings (with a 6-layer encoder: layer 5 -> 0, layer 0 -> 5, embeddings -> 6)."""
    match = _LAYER.search(name)
    if match is not None:
        return max(0, n_layers - 1 - int(match.group(1)))
    if _EMBEDDINGS.search(name):
        return n_layers
    return 0


def param_groups(model: Any, weight_decay: float, decay: float = 1.0) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: no weight decay on biases and LayerNorm weights (1-D
    tensors: decaying them only hurts); with `decay` < 1, one pair of groups per depth with
    `lr_scale` = decay ** depth. The top's groups come first (the loop logs group 0's learning rate)."""
    n_layers = num_layers(model) if decay < 1.0 else 0
    by_key: dict[tuple[int, bool], list[Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth = depth_of(name, n_layers) if decay < 1.0 else 0
        by_key.setdefault((depth, param.ndim >= 2), []).append(param)
    groups = []
    for depth in sorted({d for d, _ in by_key}) or [0]:
        for decayed in (True, False):
            params = by_key.get((depth, decayed), [])
            if params or depth == 0:
                groups.append({
                    "params": params,
                    "weight_decay": weight_decay if decayed else 0.0,
                    "lr_scale": decay**depth,
                })  # fmt: skip
    return groups


def scale_learning_rates(optimizer: Any, lr: float) -> None:
    """Give each group its share of the peak learning rate (before the scheduler reads them)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * float(group.get("lr_scale", 1.0))


def reinit_top(model: Any, *, pooler: bool, layers: int) -> list[str]:
    """Draw the pooler (if asked) and the top `layers` encoder layers afresh: linear weights from
    N(0, initializer_range), biases 0, LayerNorm 1 and 0. Returns the re-initialised module names."""
    import torch

    n_layers = num_layers(model)
    if layers > n_layers:
        raise InvalidRequest(
            f"reinit_layers is {layers} but the base model has {n_layers} layers.", param="reinit_layers"
        )
    std = float(getattr(model.config, "initializer_range", 0.02))
    chosen: list[tuple[str, Any]] = []
    for name, module in model.named_modules():
        match = _LAYER_MODULE.search(name)
        if match is not None and int(match.group(1)) >= n_layers - layers:
            chosen.append((name, module))
        elif pooler and name.split(".")[-1] == "pooler":
            chosen.append((name, module))
    if pooler and not any(n.split(".")[-1] == "pooler" for n, _ in chosen):
        raise InvalidRequest("reinit_pooler is set but the base model has no pooler.", param="reinit_pooler")
    with torch.no_grad():
        for _, module in chosen:
            for sub in module.modules():
                if isinstance(sub, torch.nn.Linear):
                    sub.weight.normal_(0.0, std)
                    if sub.bias is not None:
                        sub.bias.zero_()
                elif isinstance(sub, torch.nn.LayerNorm):
                    sub.weight.fill_(1.0)
                    sub.bias.zero_()
    return [name for name, _ in chosen]
