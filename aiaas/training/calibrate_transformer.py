"""Calibrating a fine-tuned transformer after training, baked into its weights.

The final classification Linear's weights and bias are divided by the temperature
(single-label) or scaled per label by Platt's (a_j, c_j) (multi-label): z' = a z + c is
the same map as a Linear with W' = a W, b' = a b + c. So the saved HF directory already
answers calibrated logits, and every route built from it (ONNX fp32/int8/bf16 export,
the runtime, batch jobs) serves calibrated scores with no extra node and no runtime
change. Fit on the validation logits of the final model (fp32, CPU, one forward pass);
multi-label thresholds are tuned again, one per label, on the calibrated probabilities.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.training import artifact, batching, calibration, metrics
from aiaas.training.types import PreparedDataLike, TrainCallbacks, TrainResult

EVAL_BATCH = 32


def validation_logits(model: Any, tokenizer: Any, texts: list[str], max_length: int) -> np.ndarray:
    import torch

    ids = batching.tokenize(tokenizer, texts, max_length)
    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(ids), EVAL_BATCH):
            index = np.arange(start, min(start + EVAL_BATCH, len(ids)))
            x, mask, _ = batching.collate(ids, index, tokenizer.pad_token_id)
            out[index] = model(input_ids=x, attention_mask=mask).logits.float().numpy()
    return out


def _head(model: Any, n_out: int) -> Any:
    """The last Linear with one output per label: the one the logits come from."""
    import torch

    last = None
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == n_out:
            last = module
    return last


def calibrate(
    result: TrainResult, task: str, data: PreparedDataLike, callbacks: TrainCallbacks
) -> dict[str, Any]:
    """Fit and fold the calibration into `result.model_dir`; updates result.metrics; returns the record
    (empty when there is nothing to calibrate: regression, or fewer than 2 validation rows)."""
    if task == "regression" or len(data.validation) < 2:
        return {}
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = Path(result.model_dir)
    meta = json.loads((model_dir / artifact.META_FILE).read_text())
    labels = list(meta["labels"])
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True).to("cpu").float()  # nosec B615 - a local directory this job wrote
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)  # nosec B615 - a local directory this job wrote
    head = _head(model, len(labels))
    if head is None or head.bias is None:
        return {}
    y = batching.encode_targets(task, [ex.label for ex in data.validation], labels, split="validation")
    logits = validation_logits(model, tokenizer, [ex.text for ex in data.validation], int(meta["max_length"]))
    a, c, probs, info, new_logits, before, after = _fit(task, logits, y, len(labels))
    with torch.no_grad():
        head.weight.mul_(torch.as_tensor(a, dtype=head.weight.dtype)[:, None])
        head.bias.mul_(torch.as_tensor(a, dtype=head.bias.dtype)).add_(
            torch.as_tensor(c, dtype=head.bias.dtype)
        )
    info.update({"ece_before": before, "ece_after": after})
    result.metrics.update({"ece_uncalibrated": before, "ece": after})
    meta.setdefault("metrics", {}).update({"ece_uncalibrated": before, "ece": after})
    if task == "multi_label_classification":
        rescored = metrics.multi_label(probs(new_logits), y, labels)
        meta["thresholds"] = rescored["thresholds"]
        for key in ("micro_f1", "macro_f1", "accuracy"):
            meta["metrics"][key] = rescored[key]
        result.metrics.update(rescored)
    meta["calibration"] = info
    meta.pop("format_version", None)
    artifact.write_model_dir(model_dir, model=model, tokenizer=tokenizer, meta=meta)
    how = (
        f"temperature {info['temperature']:.3g}"
        if "temperature" in info
        else ("Platt per label" if info["calibration"] == "platt" else info["calibration"])
    )
    callbacks.event("info", f"transformer calibration on validation ({how}): ECE {before:.4f} -> {after:.4f}",
                    data={"calibration": info})
    return info


_Fitted = tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray], dict[str, Any], np.ndarray, Any, Any]


def _fit(task: str, logits: np.ndarray, y: np.ndarray, n_labels: int) -> _Fitted:
    """(scale a, shift c, probabilities, record, calibrated logits, ECE before, ECE after): temperature
    for single-label, Platt per label for multi-label; no change when the fit would raise the ECE."""
    if task == "single_label_classification":
        t = calibration.fit_temperature(logits, y)
        a, c = np.full(n_labels, 1.0 / t), np.zeros(n_labels)
        probs = _softmax
        info: dict[str, Any] = {"calibration": "temperature", "temperature": round(t, 6)}
    else:
        a, c = calibration.fit_platt(logits, y)
        probs = _sigmoid
        info = {"calibration": "platt", "platt": {"a": a.round(6).tolist(), "c": c.round(6).tolist()}}
    new_logits = logits * a + c
    before = calibration.ece(task, probs(logits), y)
    after = calibration.ece(task, probs(new_logits), y)
    if before is not None and after is not None and after > before:
        # Lower NLL but higher ECE: keep the head as trained, and say so.
        info = {
            "calibration": f"none ({info['calibration']} fit raised validation ECE {before:.4f} -> {after:.4f})"
        }
        a, c, new_logits, after = np.ones(n_labels), np.zeros(n_labels), logits, before
    return a, c, probs, info, new_logits, before, after


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))
