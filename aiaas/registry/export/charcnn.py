"""Export a `char-cnn` model (aiaas.training.charcnn) to the artifact `runtime.load_predictor` loads.

The graph takes what a transformer's takes (`input_ids`, `attention_mask`, dynamic batch
and length) and answers `logits`, which the runtime turns into probabilities as usual; the
tokenizer is the model's character tokenizer.json. No runtime change is needed.

    model.fp32.onnx     the traced network (calibration and regression scaling already folded in)
    tokenizer.json      the character tokenizer, truncation at max_length
    aiaas.json          the model's aiaas.json + {"runtime": {...this export's report...}}

The check before anything is served: the loaded artifact, through the runtime, against the
trained torch network on every validation text, to within MAX_ABS_DIFF (relative above 1),
and the same labels; both accuracies are recorded when labels are known. fp32 only: the
network is ~0.3 M parameters of embeddings and small convolutions, already well under a
millisecond a text, and int8 has no accuracy guard measured for it here.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from aiaas.core.errors import AiaasError
from aiaas.registry.export.shared import (
    OPSET,
    check_precision,
    latency_fields,
    measure_latency,
    validation_set,
)
from aiaas.serving import runtime as rt
from aiaas.training import charcnn, classical

logger = logging.getLogger(__name__)

MAX_ABS_DIFF = 1e-4
BUCKET_SIZE = 8
LATENCY_SAMPLE = 64


def export_charcnn_model(
    model_dir: Path,
    out_dir: Path,
    *,
    validation_texts: list[str] | None = None,
    validation_labels: list | None = None,
    precision: str = "auto",
) -> dict:
    """Write the ONNX artifact for a char-cnn model directory; returns the runtime report."""
    check_precision(precision)
    started = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model, tokenizer, meta = charcnn.load(model_dir)
    texts, labels = validation_set(validation_texts, validation_labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "model.fp32.onnx"
    _trace(model, onnx_path)
    shutil.copyfile(model_dir / charcnn.TOKENIZER_FILE, out_dir / rt.TOKENIZER_FILE)
    runtime: dict = {
        "family": charcnn.FAMILY,
        "pad_token_id": classical.PAD_ID,
        "bucket_size": BUCKET_SIZE,
        "outputs": [rt.OUTPUT_LOGITS],
        "files": {"fp32": onnx_path.name},
        "requires": {},
        "precision": "fp32",
        "file": onnx_path.name,
        "reason": "fp32 only: a small character CNN, no int8 accuracy guard measured for it"
        + ("" if precision in ("auto", "fp32") else f" ({precision} requested)"),
    }
    full = {**{k: v for k, v in meta.items() if k != "runtime"}, "runtime": runtime}
    (out_dir / rt.META_FILE).write_text(json.dumps(full, indent=2))

    served = rt.load_graph(out_dir)
    try:
        reference = classical.outputs(meta["task"], charcnn.logits(model, tokenizer, texts))
        runtime.update(_check(meta, served.predict(texts), reference, labels))
        sample = texts[:LATENCY_SAMPLE]
        latency = measure_latency(
            {"onnx": served.predict, "torch": lambda t: charcnn.logits(model, tokenizer, t)}, sample
        )
        runtime.update(
            {
                **latency_fields(latency),
                "validation_texts": len(texts),
                "model_bytes": onnx_path.stat().st_size,
                "export_seconds": round(time.perf_counter() - started, 2),
            }
        )
    finally:
        served.close()
    (out_dir / rt.META_FILE).write_text(json.dumps(full, indent=2))
    logger.info("exported %s -> %s", model_dir, out_dir)
    return runtime


def _trace(model: object, path: Path) -> None:
    import warnings

    import torch

    ids = torch.ones((2, 7), dtype=torch.long)
    mask = torch.ones((2, 7), dtype=torch.long)
    mask[1, 3:] = 0  # real padding in the trace
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
               rt.OUTPUT_LOGITS: {0: "batch"}}  # fmt: skip
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter's deprecation notice; the numeric check after it is the real test.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
            output_names=[rt.OUTPUT_LOGITS], dynamic_axes=dynamic, opset_version=OPSET, dynamo=False,
        )  # fmt: skip
    model.eval()  # type: ignore[attr-defined]  # the exporter leaves modules in training mode (dropout on)


def _check(meta: dict, got: np.ndarray, reference: np.ndarray, labels: list | None) -> dict:
    """The served graph against the torch network: largest difference (an error past MAX_ABS_DIFF),
    the same top label, and both accuracies when labels are known."""
    scaled = np.abs(got - reference) / np.maximum(1.0, np.abs(reference))
    diff = float(scaled.max()) if len(got) else 0.0
    if not diff <= MAX_ABS_DIFF:
        raise AiaasError(
            f"The exported char-cnn graph disagrees with the trained network (max diff {diff:.2e} > "
            f"{MAX_ABS_DIFF:g})."
        )
    report: dict = {"onnx_vs_torch_max_abs_diff": diff}
    if meta["task"] == "single_label_classification" and len(got):
        if not (got.argmax(axis=1) == reference.argmax(axis=1)).all():
            raise AiaasError("The exported char-cnn graph picks another label than the trained network.")
        if labels is not None:
            index = {label: i for i, label in enumerate(meta["labels"])}
            truth = np.array([index.get(label, -1) for label in labels])
            report["accuracy"] = {
                "fp32": float((got.argmax(axis=1) == truth).mean()),
                "torch": float((reference.argmax(axis=1) == truth).mean()),
            }
    return report
