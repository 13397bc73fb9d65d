"""Training the `char-cnn` family (aiaas.training.charcnn): from scratch, within a deadline.

Adam at LEARNING_RATE, batches of BATCH_SIZE, at most MAX_EPOCHS; after each epoch the
validation set is scored with the engine's metrics and selection metric, the best epoch's
weights are kept, and training stops after PATIENCE epochs without a better score or when
the deadline would pass before another epoch ends. Then the calibration fit on validation (on a
stratified slice held out of epoch selection where calibration.HOLD_OUT_SLICE is on; off, as
measured; `fit_on` says which rows) (temperature for single-label, per-label Platt for
multi-label) is folded into the last
layer, multi-label thresholds are tuned per label on the calibrated probabilities, and
regression's target scaling is folded in too: the graph answers what is served.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.core.errors import InvalidRequest
from aiaas.training import batching, calibration, charcnn, classical, components, metrics, runtime
from aiaas.training.config import TrainConfig
from aiaas.training.types import PreparedDataLike, TrainCallbacks, TrainingStopped, TrainResult

LEARNING_RATE = 2e-3
BATCH_SIZE = 32
MAX_EPOCHS = 30
PATIENCE = 4


def train_charcnn(
    config: TrainConfig,
    data: PreparedDataLike,
    work_dir: Path,
    callbacks: TrainCallbacks,
    *,
    deadline: float | None = None,
) -> TrainResult:
    """Train, calibrate and write a char-cnn model directory under `work_dir/model`."""
    import torch

    started = time.monotonic()
    task = config.task
    labels = components.check_data(config, data)
    if not data.validation:
        raise InvalidRequest(
            "char-cnn needs a validation set to stop on and calibrate with.", param="validation_file"
        )
    texts = [ex.text for ex in data.train]
    tokenizer = classical.build_tokenizer(texts, max_chars=charcnn.MAX_CHARS)
    ids = classical.encode(tokenizer, texts)
    y = batching.encode_targets(task, [ex.label for ex in data.train], labels, split="train")
    val_texts = [ex.text for ex in data.validation]
    y_val = batching.encode_targets(task, [ex.label for ex in data.validation], labels, split="validation")
    # Validation picks the epoch and fits the calibration (with calibration.HOLD_OUT_SLICE: disjoint halves).
    every = np.arange(len(val_texts), dtype=np.int64)
    select, fit_rows = calibration.held_out_slice(task, data.validation, config.seed) or (every, every)
    mean, std = (float(y.mean()), float(y.std() or 1.0)) if task == "regression" else (0.0, 1.0)
    target = (y - mean) / std if task == "regression" else y
    n_out = 1 if task == "regression" else len(labels)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    with runtime.torch_threads(config.num_threads or runtime.available_cores()):
        model = charcnn.build_model(tokenizer.get_vocab_size(), n_out)
        fit = _fit(model, ids, target, task, [val_texts[i] for i in select], y_val[select], labels, tokenizer,
                   callbacks, rng, deadline, scale=(mean, std))  # fmt: skip
        info, scores = _calibrate(model, tokenizer, task, val_texts, y_val, labels, scale=(mean, std), fit=fit_rows)
    model_dir = _write(Path(work_dir) / "model", model, tokenizer, task, labels, scores, info)
    hyperparameters = {
        "family": charcnn.FAMILY,
        **charcnn.settings(tokenizer.get_vocab_size(), n_out),
        "learning_rate": LEARNING_RATE, "batch_size": BATCH_SIZE, "max_epochs": MAX_EPOCHS,
        "best_epoch": fit["best_epoch"], "stopped": fit["stopped"], **info,
    }  # fmt: skip
    seconds = time.monotonic() - started
    shown = {k: v for k, v in scores.items() if isinstance(v, float)}
    callbacks.event("info", f"{charcnn.FAMILY}: best epoch {fit['best_epoch']} of {fit['epochs']} "
                    f"({fit['stopped']}), {seconds:.1f} s", type="metrics",
                    data={"family": charcnn.FAMILY, **shown})  # fmt: skip
    return TrainResult(
        model_dir=model_dir,
        metrics={k: v for k, v in scores.items() if k not in ("per_label",)},
        trained_tokens=int(sum(len(x) for x in ids) * fit["epochs"]),
        steps=fit["steps"],
        epochs_completed=float(fit["epochs"]),
        hyperparameters=hyperparameters,
        history=fit["history"],
    )


def _fit(model: Any, ids: list[list[int]], target: np.ndarray, task: str, val_texts: list[str],
         y_val: np.ndarray, labels: list[str], tokenizer: Any, callbacks: TrainCallbacks,
         rng: np.random.Generator, deadline: float | None, *,
         scale: tuple[float, float]) -> dict[str, Any]:  # fmt: skip
    """Epochs with early stopping; the best epoch's weights are left in `model`."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = _loss(task)
    best: tuple[tuple[float, float], dict[str, Any], int] | None = None
    history: list[dict[str, Any]] = []
    steps, epoch, stopped, epoch_s = 0, 0, f"{MAX_EPOCHS} epochs", 0.0
    for epoch in range(1, MAX_EPOCHS + 1):
        epoch_started = time.monotonic()
        model.train()
        for index in np.array_split(rng.permutation(len(ids)), max(1, math.ceil(len(ids) / BATCH_SIZE))):
            if callbacks.should_stop():
                raise TrainingStopped()
            x, mask, _ = batching.collate(ids, index, classical.PAD_ID)
            loss = loss_fn(model(x, mask), torch.as_tensor(target[index]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        model.eval()
        scores = _scores(model, tokenizer, task, val_texts, y_val, labels, scale)
        rank = metrics.selection_score(task, scores)
        history.append({"epoch": epoch, **{k: v for k, v in scores.items() if isinstance(v, float)}})
        if best is None or rank > best[0]:
            best = (rank, {k: v.detach().clone() for k, v in model.state_dict().items()}, epoch)
        epoch_s = time.monotonic() - epoch_started
        if epoch - best[2] >= PATIENCE:
            stopped = f"no better validation score for {PATIENCE} epochs"
            break
        if deadline is not None and time.monotonic() + epoch_s > deadline:
            stopped = "the time budget would pass during another epoch"
            break
    assert best is not None
    model.load_state_dict(best[1])
    model.eval()
    return {"best_epoch": best[2], "epochs": epoch, "steps": steps, "stopped": stopped, "history": history}


def _loss(task: str) -> Any:
    import torch
    from torch import nn

    if task == "single_label_classification":
        ce = nn.CrossEntropyLoss()
        return lambda out, y: ce(out, y.long())
    if task == "multi_label_classification":
        bce = nn.BCEWithLogitsLoss()
        return lambda out, y: bce(out, y.to(torch.float32))
    mse = nn.MSELoss()
    return lambda out, y: mse(out[:, 0], y.to(torch.float32))


def _scores(model: Any, tokenizer: Any, task: str, texts: list[str], y: np.ndarray, labels: list[str],
            scale: tuple[float, float]) -> dict[str, Any]:  # fmt: skip
    out = charcnn.logits(model, tokenizer, texts)
    if task == "regression":
        out = out * scale[1] + scale[0]
    return classical.score(task, out, y, labels)


def _calibrate(model: Any, tokenizer: Any, task: str, texts: list[str], y: np.ndarray, labels: list[str], *,
               scale: tuple[float, float], fit: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Fold regression's scaling, or a calibration fit on the validation rows `fit`, into the last layer
    (kept only where it does not raise ECE on those rows, as for tfidf-linear); the final scores on every
    validation row."""
    import torch

    layer = model.out
    with torch.no_grad():
        if task == "regression":
            layer.weight.mul_(scale[1])
            layer.bias.mul_(scale[1]).add_(scale[0])
            return {}, _scores(model, tokenizer, task, texts, y, labels, (0.0, 1.0))
        raw = charcnn.logits(model, tokenizer, texts)
        before = calibration.ece(task, classical.outputs(task, raw[fit]), y[fit])
        a, c, info = calibration.fit_scaling(task, raw[fit], y[fit])
        after = calibration.ece(task, classical.outputs(task, raw[fit] * a + c), y[fit])
        if before is not None and after is not None and after > before:
            raised = f"{info['calibration']} fit raised ECE on its rows {before:.4f} -> {after:.4f}"
            info, a, c, after = {"calibration": f"none ({raised})"}, np.ones_like(a), np.zeros_like(c), before
        layer.weight.mul_(torch.as_tensor(a, dtype=torch.float32)[:, None])
        layer.bias.mul_(torch.as_tensor(a, dtype=torch.float32)).add_(torch.as_tensor(c, dtype=torch.float32))
        scores = _scores(model, tokenizer, task, texts, y, labels, (0.0, 1.0))
    held = len(fit) < len(texts)
    fit_on = (f"{len(fit)} of {len(texts)} validation rows (a stratified slice held out of epoch selection)"
              if held else f"all {len(texts)} validation rows, which also picked the epoch")  # fmt: skip
    scores.update({"ece_uncalibrated": before, "ece": after})
    info.update({"ece_before": before, "ece_after": after, "fit_rows": len(fit), "fit_on": fit_on})
    return info, scores


def _write(out: Path, model: Any, tokenizer: Any, task: str, labels: list[str], scores: dict[str, Any],
           info: dict[str, Any]) -> Path:  # fmt: skip
    import torch

    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / charcnn.WEIGHTS_FILE)
    tokenizer.save(str(out / charcnn.TOKENIZER_FILE))
    meta: dict[str, Any] = {
        "format_version": 1,
        "family": charcnn.FAMILY,
        "task": task,
        "labels": labels,
        "max_length": charcnn.MAX_CHARS,
        "do_lower_case": True,
        "base_model": charcnn.FAMILY,
        "metrics": {k: v for k, v in scores.items() if k not in ("per_label", "thresholds")},
        "charcnn": charcnn.settings(tokenizer.get_vocab_size(), 1 if task == "regression" else len(labels)),
        **({"calibration": info} if info else {}),
    }
    if task == "multi_label_classification":
        meta["thresholds"] = scores.get("thresholds") or {label: 0.5 for label in labels}
    (out / charcnn.META_FILE).write_text(json.dumps(meta, indent=2))
    return out
