"""The torch side of an export: trace the fine-tuned model to an fp32 ONNX graph that answers
both "logits" and "embeddings", and check that graph against torch on real texts."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from aiaas.core.errors import AiaasError, InvalidFile
from aiaas.registry.export.shared import OPSET
from aiaas.serving import runtime as rt

# fp32 ONNX vs torch on the same texts; a larger gap means the trace went wrong.
MAX_EXPORT_ABS_DIFF = 1e-3


def export_fp32(
    model_dir: Path, path: Path, meta: dict, *, head: bool, texts: list[str], pad_id: int
) -> tuple[tuple[list[str], dict[str, np.ndarray]], int]:
    """Trace the wrapper to ONNX; return torch's outputs on `texts` for the fp32 check."""
    import torch
    from torch.jit import TracerWarning
    from transformers import AutoModel, AutoModelForSequenceClassification

    threads = torch.get_num_threads()
    # One thread: OpenMP pools spin-wait after each op and would steal the core that
    # the ONNX Runtime timings below run on. Restored afterwards (training may share the process).
    torch.set_num_threads(1)
    try:
        loader = AutoModelForSequenceClassification if head else AutoModel
        # Eager attention: SDPA picks kernels from runtime values that a trace would freeze.
        model = loader.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32,
                                       use_safetensors=True, local_files_only=True)
        if head:
            _check_head(model, meta)
        wrapper = _build_wrapper(model, head=head).eval()
        tokenizer = rt.load_tokenizer(path.parent / rt.TOKENIZER_FILE, max_length=meta["max_length"])
        # Trace with real padding: transformers drops an all-ones mask as an optimisation,
        # and a trace taken that way would ignore padding forever after.
        ids, mask = _pad_batch([e.ids for e in tokenizer.encode_batch(["a b c d e f", "a"])], pad_id)
        output_names = [rt.OUTPUT_LOGITS, rt.OUTPUT_EMBEDDINGS] if head else [rt.OUTPUT_EMBEDDINGS]
        dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
        dynamic.update({name: {0: "batch"} for name in output_names})
        with warnings.catch_warnings():
            # Expected from the TorchScript exporter on HF models; the numeric check below is the real test.
            warnings.simplefilter("ignore", TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            torch.onnx.export(
                wrapper,
                (torch.from_numpy(ids), torch.from_numpy(mask)),
                str(path),
                input_names=["input_ids", "attention_mask"],
                output_names=output_names,
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
            )
        wrapper.eval()  # the exporter leaves modules in training mode (dropout on) when it returns
        ids, mask = _pad_batch([e.ids for e in tokenizer.encode_batch(texts)], pad_id)
        with torch.no_grad():
            outputs = wrapper(torch.from_numpy(ids), torch.from_numpy(mask))
        expected = {name: out.numpy() for name, out in zip(output_names, outputs, strict=True)}
        return (texts, expected), int(expected[rt.OUTPUT_EMBEDDINGS].shape[1])
    finally:
        torch.set_num_threads(threads)


def _build_wrapper(model, *, head: bool):  # -> torch.nn.Module
    """One module whose forward returns (logits, embeddings), or (embeddings,) when headless."""
    import torch

    class ExportWrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=head)
            hidden = out.hidden_states[-1] if head else out.last_hidden_state
            # Mean over real tokens only: padding must not move the embedding.
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            embeddings = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return (out.logits, embeddings) if head else (embeddings,)

    return ExportWrapper()


def _check_head(model, meta: dict) -> None:
    n = int(model.config.num_labels)
    task = meta["task"]
    want = 1 if task == "regression" else len(meta.get("labels") or [])
    if n != want:
        raise InvalidFile(f"aiaas.json says {task} with {want} output(s) but the model head has {n}.")


def _pad_batch(token_ids: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(ids) for ids in token_ids)
    ids = np.full((len(token_ids), width), pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, seq in enumerate(token_ids):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def check_against_torch(
    predictor: rt.Predictor, reference: tuple[list[str], dict[str, np.ndarray]]
) -> float:
    texts, expected = reference
    got = predictor.infer(
        texts, probabilities=rt.OUTPUT_LOGITS in expected, embeddings=rt.OUTPUT_EMBEDDINGS in expected
    )
    diffs = []
    if rt.OUTPUT_LOGITS in expected:
        assert got.probabilities is not None
        diffs.append(np.abs(got.probabilities - predictor._postprocess(expected[rt.OUTPUT_LOGITS])).max())
    if rt.OUTPUT_EMBEDDINGS in expected:
        assert got.embeddings is not None
        diffs.append(np.abs(got.embeddings - expected[rt.OUTPUT_EMBEDDINGS]).max())
    worst = float(max(diffs))
    if worst > MAX_EXPORT_ABS_DIFF:
        raise AiaasError(
            f"The exported ONNX graph disagrees with the torch model (max diff {worst:.2e}); "
            "this model architecture may not trace cleanly."
        )
    return worst
