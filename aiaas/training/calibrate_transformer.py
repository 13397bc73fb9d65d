"""Calibrating a fine-tuned transformer after training, baked into its weights.

The final classification Linear's weights and bias are divided by the temperature
(single-label) or scaled per label by Platt's (a_j, c_j) (multi-label): z' = a z + c is
the same map as a Linear with W' = a W, b' = a b + c. So the saved HF directory already
answers calibrated logits, and every route built from it (ONNX fp32/int8/bf16 export,
the runtime, batch jobs) serves calibrated scores with no extra node and no runtime
change. Fit on the logits of the final model (fp32, CPU, one forward pass); multi-label
thresholds are tuned again, one per label, on the calibrated probabilities.

Which rows the fit uses (`split_for_calibration`, recorded as `fit_on`): validation picks the
epoch kept (and stops the run early), so its rows favour the kept epoch, and a temperature fit on
them could come out too low. With calibration.HOLD_OUT_SLICE on, where validation picks among
epochs, a stratified slice of it (calibration.CALIBRATION_SHARE) is held out of the data train()
gets: the epoch is picked on the rest, the calibration fit on the slice, and the metrics scored on
all validation rows afterwards. It is off: on the bench the slice lowered no test ECE and cost
accuracy, so all validation rows pick the epoch and fit the temperature (as a one-epoch run, which
picks nothing, and fewer than calibration.MIN_SPLIT_ROWS rows always do).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.training import artifact, batching, calibration, classical, metrics
from aiaas.training.auto_cv import FoldData
from aiaas.training.config import TrainConfig
from aiaas.training.types import PreparedDataLike, TrainCallbacks, TrainResult

EVAL_BATCH = 32


@dataclass(frozen=True)
class CalibrationSplit:
    """What train() gets (`data`: its validation rows pick the epoch) and which validation rows of the
    job's data the calibration is fit on (`fit_index`); `fit_on` says which, for metrics and the card."""

    data: PreparedDataLike
    fit_index: np.ndarray
    fit_on: str
    held_out: bool = False  # True: the fit rows are not among `data.validation` (they picked nothing)


def split_for_calibration(config: TrainConfig, data: PreparedDataLike) -> CalibrationSplit:
    """The data to train on and the validation rows to calibrate with (see the module's docstring)."""
    n = len(data.validation)
    every = np.arange(n, dtype=np.int64)
    if config.task == "regression":
        return CalibrationSplit(data, every, "none (regression is not calibrated)")
    if config.n_epochs == 1:
        return CalibrationSplit(data, every, f"all {n} validation rows (one epoch: they picked nothing)")
    held = calibration.held_out_slice(config.task, data.validation, config.seed)
    if held is None:
        why = (f"{n} are under {calibration.MIN_SPLIT_ROWS}: too few to hold some out" if calibration.HOLD_OUT_SLICE
               else "a held-out slice measured no better on the bench")  # fmt: skip
        return CalibrationSplit(data, every, f"all {n} validation rows, which also picked the epoch ({why})")
    select, fit = held
    rows = list(data.validation)
    kept = FoldData(config.task, list(data.train), [rows[i] for i in select], list(data.labels),
                    dict(data.report), dict(data.cleaning))  # fmt: skip
    return CalibrationSplit(
        kept, fit, f"{len(fit)} of {n} validation rows (a stratified slice held out of epoch selection; "
        f"the other {len(select)} picked the epoch)", held_out=True,
    )  # fmt: skip


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
    result: TrainResult, task: str, data: PreparedDataLike, callbacks: TrainCallbacks,
    split: CalibrationSplit | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Fit and fold the calibration into `result.model_dir`; updates result.metrics; returns the record
    (empty when there is nothing to calibrate: regression, or fewer than 2 rows to fit on).

    `data` is the job's data; `split` (split_for_calibration) says which of its validation rows the fit
    uses (default: all of them). Where a slice was held out of epoch selection, the metrics train()
    scored on the other rows are scored again on all validation rows, with the calibrated model."""
    every = np.arange(len(data.validation), dtype=np.int64)
    if split is None:
        split = CalibrationSplit(data, every, f"all {len(every)} validation rows (they also picked the epoch)")
    if task == "regression" or len(split.fit_index) < 2:
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
    y_all = batching.encode_targets(task, [ex.label for ex in data.validation], labels, split="validation")
    texts = [ex.text for ex in data.validation]
    logits_all = validation_logits(model, tokenizer, texts if split.held_out else [texts[i] for i in split.fit_index],
                                   int(meta["max_length"]))  # fmt: skip
    logits = logits_all[split.fit_index] if split.held_out else logits_all
    y = y_all[split.fit_index]
    a, c, probs, info, new_logits, before, after = _fit(task, logits, y, len(labels))
    with torch.no_grad():
        head.weight.mul_(torch.as_tensor(a, dtype=head.weight.dtype)[:, None])
        head.bias.mul_(torch.as_tensor(a, dtype=head.bias.dtype)).add_(
            torch.as_tensor(c, dtype=head.bias.dtype)
        )
    info.update({"ece_before": before, "ece_after": after, "fit_rows": len(split.fit_index), "fit_on": split.fit_on})
    result.metrics.update({"ece_uncalibrated": before, "ece": after})
    meta.setdefault("metrics", {}).update({"ece_uncalibrated": before, "ece": after})
    if split.held_out:  # scored again on every validation row: the served (calibrated) model's scores
        _rescore(result, meta, classical.score(task, logits_all * a + c, y_all, labels), task)
    elif task == "multi_label_classification":
        _rescore(result, meta, metrics.multi_label(probs(new_logits), y, labels), task)
    meta["calibration"] = info
    meta.pop("format_version", None)
    artifact.write_model_dir(model_dir, model=model, tokenizer=tokenizer, meta=meta)
    how = (
        f"temperature {info['temperature']:.3g}"
        if "temperature" in info
        else ("Platt per label" if info["calibration"] == "platt" else info["calibration"])
    )
    callbacks.event("info", f"transformer calibration on validation ({split.fit_on}; {how}): "
                    f"ECE {before:.4f} -> {after:.4f}",
                    data={"calibration": info})  # fmt: skip
    return info


def _rescore(result: TrainResult, meta: dict[str, Any], scores: dict[str, Any], task: str) -> None:
    """The calibrated model's validation scores into the result's metrics and aiaas.json (multi-label:
    with the thresholds tuned again on its calibrated probabilities)."""
    result.metrics.update(scores)
    meta["metrics"].update({k: v for k, v in scores.items() if k not in ("per_label", "thresholds")})
    if task == "multi_label_classification":
        meta["thresholds"] = scores["thresholds"]


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
