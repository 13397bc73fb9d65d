"""Export a `tfidf-linear` model to the artifact `aiaas.serving.runtime.load_predictor` loads.

No change to the runtime is needed: the model's tokenizer is a `tokenizers`
tokenizer.json (characters, see aiaas.training.classical), and the graph takes the
same inputs as a transformer's (`input_ids`, `attention_mask`) and answers `logits`,
which the runtime turns into probabilities as usual. Serving needs neither
scikit-learn nor scipy. The graph, per n-gram block (characters, words):

    ids   = input_ids * attention_mask                   padding becomes [PAD] (id 0), in no n-gram
    tf    = TfIdfVectorizer(ids)                         ONNX's n-gram counter, int64 pool, [N, F]
    v     = where(tf > 0, 1 + log(tf), 0) * idf          sublinear tf times idf
    part  = (v @ W) / max(||v||, 1e-12)                  L2-normalised block, then its linear weights
    logits = part_char + part_word + bias

Then the check that the graph computes what training did: the exported model and
the scikit-learn/scipy predictor (classical.ClassicalModel) must agree on every
validation text to within MAX_ABS_DIFF, or the export fails. Both predictors'
latency is measured side by side and recorded; the ONNX one is what gets served.

    model.fp32.onnx     the graph (fp32 only: the work is sparse counting, not matmuls)
    tokenizer.json      the character tokenizer, truncation at max_length
    aiaas.json          the model's aiaas.json + {"runtime": {...this export's report...}}
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
from aiaas.training import classical

logger = logging.getLogger(__name__)

# Graph and scikit-learn predictor may differ by float32 rounding only (relative above 1).
MAX_ABS_DIFF = 1e-4
# Rows per run: the dense [rows, features] intermediates are the cost, so small buckets.
# Measured on a 2-core host, 64 texts, seq/s with 65k / 97k features (English / Chinese):
# 1 -> 1214 / 498, 4 -> 1464 / 573, 8 -> 1403 / 517, 16 -> 1312 / 460, 32 -> 1274 / 367.
BUCKET_SIZE = 4
LATENCY_SAMPLE = 64


def export_classical_model(
    model_dir: Path,
    out_dir: Path,
    *,
    validation_texts: list[str] | None = None,
    validation_labels: list | None = None,
    precision: str = "auto",
) -> dict:
    """Write the ONNX artifact for a tfidf-linear model directory; returns the runtime report."""
    check_precision(precision)
    started = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model = classical.ClassicalModel.load(model_dir)
    texts, labels = validation_set(validation_texts, validation_labels)
    out_dir.mkdir(parents=True, exist_ok=True)

    onnx_path = out_dir / "model.fp32.onnx"
    save_graph(model, onnx_path)
    shutil.copyfile(model_dir / classical.TOKENIZER_FILE, out_dir / rt.TOKENIZER_FILE)
    runtime: dict = {
        "family": classical.FAMILY,
        "pad_token_id": classical.PAD_ID,
        "bucket_size": BUCKET_SIZE,
        "outputs": [rt.OUTPUT_LOGITS],
        "files": {"fp32": onnx_path.name},
        "requires": {},
        "precision": "fp32",
        "file": onnx_path.name,
        "reason": "fp32 only: a tfidf-linear graph is sparse n-gram counting; there is no big matmul "
        "for int8/bf16 to speed up" + ("" if precision in ("auto", "fp32") else f" ({precision} requested)"),
    }
    meta = {**{k: v for k, v in model.meta.items() if k != "runtime"}, "runtime": runtime}
    (out_dir / rt.META_FILE).write_text(json.dumps(meta, indent=2))

    served = rt.load_graph(out_dir)
    runtime.update(_check_agreement(model, served, texts, labels))
    latency = measure_latency({"onnx": served.predict, "sklearn": model.predict}, texts[:LATENCY_SAMPLE])
    runtime.update(
        {
            "served_by": "onnx",
            "served_by_reason": "same runtime path as every other model, no scikit-learn or scipy at "
            "serving time; latency of both measured below",
            **latency_fields(latency),
            "validation_texts": len(texts),
            "model_bytes": onnx_path.stat().st_size,
            "export_seconds": round(time.perf_counter() - started, 2),
        }
    )
    served.close()
    (out_dir / rt.META_FILE).write_text(json.dumps(meta, indent=2))
    logger.info("exported %s -> %s (%s features)", model_dir, out_dir, model.featurizer.n_features)
    return runtime


def _check_agreement(
    model: classical.ClassicalModel, served: rt.Predictor, texts: list[str], labels: list | None
) -> dict:
    """The served graph against the scikit-learn/scipy predictor on the validation texts: their
    largest difference (an error past MAX_ABS_DIFF), and both accuracies when labels are known."""
    reference = model.predict(texts)
    got = served.predict(texts)
    # Relative beyond 1: regression values may be in the thousands, float32 keeps ~7 digits.
    scaled = np.abs(got - reference) / np.maximum(1.0, np.abs(reference))
    diff = float(scaled.max()) if len(texts) else 0.0
    if not diff <= MAX_ABS_DIFF:
        raise AiaasError(
            f"The exported tfidf-linear graph disagrees with the trained model (max diff {diff:.2e} > "
            f"{MAX_ABS_DIFF:g}); the n-gram counting in ONNX and scikit-learn differ."
        )
    report: dict = {"onnx_vs_sklearn_max_abs_diff": diff}
    if labels is not None and model.task == "single_label_classification" and model.labels:
        index = {label: i for i, label in enumerate(model.labels)}
        truth = np.array([index.get(label, -1) for label in labels])
        report["accuracy"] = {
            "fp32": float((got.argmax(axis=1) == truth).mean()),
            "sklearn": float((reference.argmax(axis=1) == truth).mean()),
        }
    return report


# -- the graph ------------------------------------------------------------------------------
def build_graph(model: classical.ClassicalModel):  # -> onnx.ModelProto
    """The ONNX graph for a trained model (see the module docstring for what it computes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list = []
    inits: list = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    const("zero_f", np.array(0.0, dtype=np.float32))
    const("one_f", np.array(1.0, dtype=np.float32))
    const("eps_f", np.array(1e-12, dtype=np.float32))
    nodes.append(helper.make_node("Mul", ["input_ids", "attention_mask"], ["ids"], name="mask_padding"))
    parts: list[str] = []
    column = 0
    n_out = model.head.weights.shape[1]
    for block in model.featurizer.blocks:
        width = len(block)
        if width == 0:
            continue
        weights = model.head.weights[column : column + width].astype(np.float32)
        column += width
        nodes += _block_nodes(block, weights, const)
        parts.append(f"{block.name}_part")
    const("bias", model.head.bias.astype(np.float32).reshape(1, n_out))
    nodes.append(helper.make_node("Sum", [*parts, "bias"], ["logits_sum"]))
    # A [N, 1] bias alone would not follow a batch of N; Expand to the batch size.
    nodes += [
        helper.make_node("Shape", ["input_ids"], ["ids_shape"], start=0, end=1),
        helper.make_node("Concat", ["ids_shape", "n_out"], ["out_shape"], axis=0),
        helper.make_node("Expand", ["logits_sum", "out_shape"], [rt.OUTPUT_LOGITS]),
    ]
    const("n_out", np.array([n_out], dtype=np.int64))
    graph = helper.make_graph(
        nodes,
        "tfidf_linear",
        inputs=[
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        outputs=[helper.make_tensor_value_info(rt.OUTPUT_LOGITS, TensorProto.FLOAT, ["batch", n_out])],
        initializer=inits,
    )
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="aiaas.tfidf-linear"
    )
    onnx_model.ir_version = min(onnx_model.ir_version, 9)
    onnx.checker.check_model(onnx_model)
    return onnx_model


def _block_nodes(block: Any, weights: np.ndarray, const: Callable[[str, np.ndarray], str]) -> list:
    """One n-gram block's part of the logits: `(v @ W) / max(||v||, 1e-12)` with `v` its sublinear
    tf-idf (the module docstring), as nodes reading "ids" and writing "<block>_part"."""
    from onnx import helper

    b = block.name
    pool, counts, indexes, min_n, max_n = _pool(block.grams)
    const(f"{b}_idf", block.idf.astype(np.float32).reshape(1, -1))
    const(f"{b}_w", weights)
    return [
        helper.make_node(
            "TfIdfVectorizer",
            ["ids"],
            [f"{b}_tf"],
            name=f"{b}_ngrams",
            mode="TF",
            min_gram_length=min_n,
            max_gram_length=max_n,
            max_skip_count=0,
            ngram_counts=counts,
            ngram_indexes=indexes,
            pool_int64s=pool,
        ),
        helper.make_node("Greater", [f"{b}_tf", "zero_f"], [f"{b}_present"]),
        helper.make_node("Log", [f"{b}_tf"], [f"{b}_log"]),  # -inf where absent; Where drops it
        helper.make_node("Add", [f"{b}_log", "one_f"], [f"{b}_sub"]),
        helper.make_node("Where", [f"{b}_present", f"{b}_sub", "zero_f"], [f"{b}_s"]),
        helper.make_node("Mul", [f"{b}_s", f"{b}_idf"], [f"{b}_v"]),
        # A reduction, not a [F, 1] MatMul: measured 2.5 -> 1.9 ms per text with 97k features.
        helper.make_node("ReduceSumSquare", [f"{b}_v"], [f"{b}_norm2"], axes=[1], keepdims=1),
        helper.make_node("Sqrt", [f"{b}_norm2"], [f"{b}_norm_raw"]),
        helper.make_node("Max", [f"{b}_norm_raw", "eps_f"], [f"{b}_norm"]),
        helper.make_node("MatMul", [f"{b}_v", f"{b}_w"], [f"{b}_raw"]),
        helper.make_node("Div", [f"{b}_raw", f"{b}_norm"], [f"{b}_part"]),
    ]


def save_graph(model: classical.ClassicalModel, path: Path) -> Path:
    import onnx

    onnx.save(build_graph(model), str(path))
    return path


def _pool(grams: list[tuple[int, ...]]) -> tuple[list[int], list[int], list[int], int, int]:
    """ONNX's pool layout: n-grams grouped by length (1, 2, ...), `ngram_counts` holding where
    each length starts in the flat pool, `ngram_indexes` the output column of each n-gram."""
    order = sorted(range(len(grams)), key=lambda i: len(grams[i]))
    lengths = [len(grams[i]) for i in order]
    min_n, max_n = lengths[0], lengths[-1]
    pool: list[int] = []
    counts: list[int] = []
    position = 0
    for n in range(1, max_n + 1):
        counts.append(len(pool))
        while position < len(order) and lengths[position] == n:
            pool.extend(grams[order[position]])
            position += 1
    return pool, counts, order, min_n, max_n
