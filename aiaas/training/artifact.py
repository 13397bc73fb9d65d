"""The finished model: `work_dir/model/`, an HF directory plus `aiaas.json`.

aiaas.json tells registry and serving what the head means without reading our code:
    {"format_version", "task", "labels", "max_length", "do_lower_case", "metrics",
     "thresholds" (multi-label), "base_model", "selection_metric", "regression"}
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
META_FILE = "aiaas.json"


def fold_regression_scale(model: Any, mean: float, std: float) -> bool:
    """Fold target standardization into the output layer, so outputs are in the user's units.

    Training used (y - mean) / std as target; the final Linear then predicts that. With
    W' = std * W and b' = std * b + mean the exported model predicts y directly, and
    serving needs no extra step. Returns False if no 1-output Linear layer was found.
    """
    import torch

    last = None
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == 1:
            last = module
    if last is None or last.bias is None:
        return False
    with torch.no_grad():
        last.weight.mul_(std)
        last.bias.mul_(std).add_(mean)
    return True


def write_model_dir(model_dir: Path, *, model: Any, tokenizer: Any, meta: dict[str, Any]) -> Path:
    """Write the directory next to its final place, then swap it in (no half-written model)."""
    tmp = model_dir.with_name(f".tmp-{model_dir.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / META_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2))
    if model_dir.exists():
        shutil.rmtree(model_dir)
    os.rename(tmp, model_dir)
    return model_dir
