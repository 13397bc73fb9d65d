"""Export a trained model to ONNX, try cheaper precisions, keep one only if it holds up.

Runs in a worker process after training (it imports torch and transformers; the
serving runtime never does). Writes an artifact directory that
`aiaas.serving.runtime.load_predictor` loads:

    model.fp32.onnx         always: the reference, and the fallback on any machine
    model.int8.onnx         dynamic int8 (onnxruntime.quantization), when it passed the guard
    model.bf16.onnx         when this CPU has bf16 AND ONNX Runtime has kernels for it AND faster
    tokenizer.json          truncation at max_length, padding off (the runtime pads per bucket)
    aiaas.json              the model's aiaas.json + {"runtime": {...this export's report...}}

One graph answers both "logits" [N, C] and "embeddings" [N, H] (mean-pooled over the
attention mask, L2-normalised), with dynamic batch and sequence axes. For classifiers the
export also writes the first-token graph for logits-only requests (serving/first_token.py),
pre-optimised, as model.<precision>.first_token.onnx, judges it, and records the verdict under
runtime.first_token (with the file, where accepted: a load then only opens it).

The modules, in the order an export runs them:
    pipeline.py     export_model / export_base_model: the steps below, the choice, aiaas.json
    trace.py        torch -> fp32 ONNX, checked against torch
    precisions.py   int8 and bf16 candidates
    guard.py        the accuracy guard's verdicts, the first-token verdict, the choice
    shared.py       precision names, validation set, latency: shared with classical.py
    classical.py    the tfidf-linear family's own graph (no torch)
    charcnn.py      the char-cnn family's traced graph
    ensemble.py     an ensemble: both members exported, then its aiaas.json
"""

from __future__ import annotations

from pathlib import Path

from aiaas.registry.export.classical import export_classical_model
from aiaas.registry.export.pipeline import export_base_model, export_model
from aiaas.registry.export.precisions import convert_matmul_weights_to_bf16

__all__ = [
    "convert_matmul_weights_to_bf16",
    "export_base_model",
    "export_classical_model",
    "export_model",
    "export_trained_model",
]


def export_trained_model(
    model_dir: Path,
    out_dir: Path,
    *,
    validation_texts: list[str] | None = None,
    validation_labels: list | None = None,
    precision: str = "auto",
) -> dict:
    """Export whatever family trained `model_dir`: the one call a job runner needs."""
    from aiaas.training import charcnn, classical, ensemble

    export = export_classical_model if classical.is_classical(model_dir) else export_model
    if charcnn.is_charcnn(model_dir):
        from aiaas.registry.export.charcnn import export_charcnn_model

        export = export_charcnn_model
    if ensemble.is_ensemble(model_dir):  # two members, each exported by its own exporter
        from aiaas.registry.export.ensemble import export_ensemble_model

        export = export_ensemble_model
    return export(
        model_dir,
        out_dir,
        validation_texts=validation_texts,
        validation_labels=validation_labels,
        precision=precision,
    )
