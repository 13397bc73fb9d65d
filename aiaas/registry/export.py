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
export also judges the first-token graph the runtime derives from it for logits-only
requests (serving/first_token.py), and records the verdict under runtime.first_token.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aiaas.core.errors import AiaasError, InvalidFile, InvalidRequest
from aiaas.serving import runtime as rt
from aiaas.serving.agreement import DEFAULT_VALIDATION_TEXTS, GuardDecision, guard_decision
from aiaas.serving.machine import cpu_features, has_bf16, has_int8_dot_product, ort_bf16_matmul_error

if TYPE_CHECKING:
    import onnxruntime as ort

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "int8", "bf16")
CLASSIFIER_TASKS = ("single_label_classification", "multi_label_classification", "regression")
# Enough texts to see a 1% disagreement rate; more only slows the export down.
MAX_VALIDATION_TEXTS = 1000
LATENCY_SAMPLE = 32
LATENCY_ROUNDS = 3
# A cheaper precision must beat fp32 by this much, or the accuracy risk isn't worth it
# (single-request timings on a shared 2-core host jitter by a few percent).
MIN_SPEEDUP = 1.10
# fp32 ONNX vs torch on the same texts; a larger gap means the trace went wrong.
MAX_EXPORT_ABS_DIFF = 1e-3
OPSET = 17


def export_model(
    model_dir: Path,
    out_dir: Path,
    *,
    validation_texts: list[str] | None = None,
    validation_labels: list | None = None,
    precision: str = "auto",
) -> dict:
    """Export a fine-tuned HF classifier/regressor (model_dir has aiaas.json); returns the runtime report."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    meta = _read_model_meta(model_dir)
    return _export(
        model_dir,
        out_dir,
        meta,
        head=True,
        validation_texts=validation_texts,
        validation_labels=validation_labels,
        precision=precision,
    )


def export_base_model(
    model_dir: Path,
    out_dir: Path,
    *,
    validation_texts: list[str] | None = None,
    precision: str = "auto",
    max_length: int | None = None,
) -> dict:
    """Export a headless encoder (e.g. MiniLM for /v1/embeddings): only the "embeddings" output."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    meta = {
        "task": "embedding",
        "labels": [],
        "max_length": max_length or _default_max_length(model_dir),
        "do_lower_case": _tokenizer_config(model_dir).get("do_lower_case", False),
    }
    return _export(
        model_dir,
        out_dir,
        meta,
        head=False,
        validation_texts=validation_texts,
        validation_labels=None,
        precision=precision,
    )


# -- the pipeline ---------------------------------------------------------------------------
def _export(
    model_dir: Path,
    out_dir: Path,
    meta: dict,
    *,
    head: bool,
    validation_texts: list[str] | None,
    validation_labels: list | None,
    precision: str,
) -> dict:
    if precision not in PRECISIONS:
        raise InvalidRequest(
            f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.", param="precision"
        )
    texts, labels = _validation_set(validation_texts, validation_labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    features = cpu_features()

    pad_id = _write_tokenizer(model_dir, out_dir / rt.TOKENIZER_FILE, max_length=meta["max_length"])
    fp32_path = out_dir / "model.fp32.onnx"
    torch_reference, embedding_dim = _export_fp32(
        model_dir, fp32_path, meta, head=head, texts=texts[:16], pad_id=pad_id
    )
    runtime: dict = {
        "pad_token_id": pad_id,
        "embedding_dim": embedding_dim,
        "bucket_size": rt.DEFAULT_BUCKET_SIZE,
        "outputs": [rt.OUTPUT_LOGITS, rt.OUTPUT_EMBEDDINGS] if head else [rt.OUTPUT_EMBEDDINGS],
        "files": {"fp32": fp32_path.name},
        "requires": {},
        "machine": features,
    }
    meta = {**meta, "runtime": runtime}
    fp32 = _predictor(fp32_path, meta, "fp32")
    runtime["fp32_vs_torch_max_abs_diff"] = _check_against_torch(fp32, torch_reference)
    trial = _Trial(out_dir, meta, texts, labels, _served_outputs(fp32, texts), {"fp32": fp32})
    if precision in ("auto", "int8"):
        _try_int8(trial, fp32_path, features)
    if precision in ("auto", "bf16"):
        _try_bf16(trial, fp32_path, features)

    latency = _measure_latency(trial.predictors, texts[:LATENCY_SAMPLE])
    decisions, candidates = trial.decisions, trial.candidates
    chosen, why = _choose(precision, decisions, latency, candidates)
    for name, candidate in candidates.items():
        candidate["chosen"] = name == chosen
        if name != chosen and name in runtime["files"]:  # keep the artifact lean
            (out_dir / runtime["files"].pop(name)).unlink(missing_ok=True)
            runtime["requires"].pop(name, None)
    runtime.update(
        {
            "precision": chosen,
            "file": runtime["files"][chosen],
            "reason": why,
            "agreement": {name: d.agreement for name, d in decisions.items()},
            "accuracy": _accuracy_report(decisions),
            "latency_ms": {
                name: {k: v for k, v in m.items() if k != "seq_per_s"} for name, m in latency.items()
            },
            "throughput_seq_s": {name: m["seq_per_s"] for name, m in latency.items()},
            "candidates": candidates,
            "validation_texts": len(texts),
        }
    )
    if head:
        runtime["first_token"] = {chosen: _judge_first_token(trial, chosen, texts[:LATENCY_SAMPLE])}
    runtime["export_seconds"] = round(time.perf_counter() - started, 2)
    (out_dir / rt.META_FILE).write_text(json.dumps(meta, indent=2))
    logger.info("exported %s -> %s: %s (%s)", model_dir, out_dir, chosen, why)
    return runtime


def _choose(
    requested: str, decisions: dict[str, GuardDecision], latency: dict[str, dict], candidates: dict[str, dict]
) -> tuple[str, str]:
    accepted = [name for name, d in decisions.items() if d.accepted]
    if requested == "fp32":
        return "fp32", "fp32 requested"
    if requested in ("int8", "bf16"):
        if requested in accepted:
            return requested, f"{requested} requested and passed the accuracy guard"
        reason = candidates.get(requested, {}).get("reason", "not available")
        return "fp32", f"{requested} requested but rejected: {reason}"
    base = latency["fp32"]["p50"]
    faster = [n for n in accepted if latency[n]["p50"] * MIN_SPEEDUP <= base]
    if not faster:
        if accepted:
            return "fp32", f"{', '.join(accepted)} passed the guard but was not {MIN_SPEEDUP:.2f}x faster"
        return "fp32", "no lower precision passed the accuracy guard"
    best = min(faster, key=lambda n: latency[n]["p50"])
    return best, f"{best} passed the guard and is {base / latency[best]['p50']:.2f}x faster than fp32"


def _accuracy_report(decisions: dict[str, GuardDecision]) -> dict:
    report: dict = {}
    for name, d in decisions.items():
        if d.accuracy_reference is not None:
            report.setdefault("fp32", d.accuracy_reference)
            report[name] = d.accuracy_candidate
    return report


# -- candidates -----------------------------------------------------------------------------
@dataclass
class _Trial:
    """What every candidate precision is judged against, and what the judging produced."""

    out_dir: Path
    meta: dict
    texts: list[str]
    labels: list | None
    served: np.ndarray  # fp32's served outputs on `texts`
    predictors: dict[str, rt.Predictor]
    candidates: dict[str, dict] = field(default_factory=dict)
    decisions: dict[str, GuardDecision] = field(default_factory=dict)

    def judge(self, precision: str, path: Path) -> GuardDecision:
        predictor = _predictor(path, self.meta, precision)
        decision = self.verdict(predictor)
        self.predictors[precision] = predictor
        self.decisions[precision] = decision
        return decision

    def verdict(self, predictor: rt.Predictor) -> GuardDecision:
        """The accuracy guard's decision on what `predictor` serves for the validation texts."""
        return guard_decision(
            task=self.meta["task"],
            reference=self.served,
            candidate=_served_outputs(predictor, self.texts),
            labels=self.labels,
            label_names=self.meta.get("labels"),
            thresholds=rt.thresholds_in_label_order(
                self.meta.get("thresholds"), [str(label) for label in self.meta.get("labels") or []]
            ),
        )


def _judge_first_token(trial: _Trial, precision: str, latency_texts: list[str]) -> dict:
    """The chosen graph with its last layer narrowed to the first token (serving/first_token.py),
    judged against fp32 by the same guard; the runtime serves logits from it only if accepted."""
    path = trial.out_dir / trial.meta["runtime"]["files"][precision]
    session = rt.open_first_token_session(path, intra_op_threads=1)
    if session is None:
        return {"accepted": False, "reason": "the graph has no first-token head to narrow"}
    full = trial.predictors[precision]
    narrowed = _predictor(path, trial.meta, precision, logits_session=session)
    decision = trial.verdict(narrowed)
    speed = _measure_latency({"full": full, "first_token": narrowed}, latency_texts)
    logger.info("first-token %s graph: %s", precision, decision.reason)
    return {
        **decision.to_dict(),
        "throughput_seq_s": {name: m["seq_per_s"] for name, m in speed.items()},
    }


def _try_int8(trial: _Trial, fp32_path: Path, features: dict) -> None:
    """Dynamic int8, per-channel weights. If the full graph fails the guard, retry with the
    down-projections (weights wider in than out, fed by GELU outputs with large outliers)
    left in fp32: measured on MiniLM-L6 this lifts mean cosine to fp32 from 0.989 to 0.994
    for ~20% of the int8 speed-up."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Without VNNI/AMX, u8*s8 products go through an instruction that can saturate;
    # 7-bit weights ("reduce_range") avoid that at a small accuracy cost.
    full_range = has_int8_dot_product(features)
    path = trial.out_dir / "model.int8.onnx"
    runtime = trial.meta["runtime"]
    for recipe, exclude in (("all_weights", []), ("keep_down_proj_fp32", _down_projections(fp32_path))):
        quantize_dynamic(
            fp32_path,
            path,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=not full_range,
            op_types_to_quantize=["MatMul", "Gather"],
            nodes_to_exclude=exclude,
        )
        runtime["files"]["int8"] = path.name
        runtime["requires"]["int8"] = ["int8_dot_product"] if full_range else []
        decision = trial.judge("int8", path)
        attempts = trial.candidates.get("int8", {}).get("attempts", [])
        attempts.append({"recipe": recipe, **decision.to_dict()})
        trial.candidates["int8"] = {
            "recipe": recipe,
            "per_channel": True,
            "reduce_range": not full_range,
            "fp32_nodes": len(exclude),
            **decision.to_dict(),
            "attempts": attempts,
        }
        logger.info("int8 %s: %s", recipe, decision.reason)
        if decision.accepted:
            return


def _try_bf16(trial: _Trial, fp32_path: Path, features: dict) -> None:
    if not has_bf16(features):
        trial.candidates["bf16"] = {
            "accepted": False,
            "reason": "this CPU has neither AVX512-BF16 nor AMX-BF16",
        }
        return
    kernel_error = ort_bf16_matmul_error()
    if kernel_error:
        trial.candidates["bf16"] = {"accepted": False, "reason": kernel_error}
        return
    import onnx

    path = trial.out_dir / "model.bf16.onnx"
    onnx.save(convert_matmul_weights_to_bf16(onnx.load(str(fp32_path))), str(path))
    trial.meta["runtime"]["files"]["bf16"] = path.name
    trial.candidates["bf16"] = trial.judge("bf16", path).to_dict()


def convert_matmul_weights_to_bf16(model):  # -> onnx.ModelProto
    """Store MatMul weights as bf16 and run those MatMuls in bf16, casting activations in
    and results back to fp32, so every other op keeps its fp32 kernel."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    new_nodes = []
    for node in graph.node:
        weight = next((name for name in node.input if name in inits), None)
        if node.op_type != "MatMul" or weight is None or inits[weight].data_type != TensorProto.FLOAT:
            new_nodes.append(node)
            continue
        activation = next(name for name in node.input if name != weight)
        values = numpy_helper.to_array(inits[weight]).astype(np.float32)
        # bf16 = the top 16 bits of fp32, rounded to nearest even.
        bits = values.view(np.uint32)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        bf16 = helper.make_tensor(
            weight + "_bf16", TensorProto.BFLOAT16, values.shape, rounded.tobytes(), raw=True
        )
        graph.initializer.append(bf16)
        cast_in = helper.make_node(
            "Cast", [activation], [activation + "_bf16_" + node.name], to=TensorProto.BFLOAT16
        )
        inputs = [cast_in.output[0] if name == activation else bf16.name for name in node.input]
        matmul = helper.make_node("MatMul", inputs, [node.output[0] + "_bf16"], name=node.name)
        cast_out = helper.make_node("Cast", [matmul.output[0]], list(node.output), to=TensorProto.FLOAT)
        new_nodes.extend([cast_in, matmul, cast_out])
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    onnx.checker.check_model(model)
    return model


def _down_projections(fp32_path: Path) -> list[str]:
    """MatMul nodes whose weight maps a wider input to a narrower output (FFN output dense)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(fp32_path))
    shapes = {init.name: numpy_helper.to_array(init).shape for init in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        for name in node.input:
            shape = shapes.get(name)
            if shape is not None and len(shape) == 2 and shape[0] > shape[1]:
                found.append(node.name)
    return found


# -- validation and timing ------------------------------------------------------------------
def _validation_set(texts: list[str] | None, labels: list | None) -> tuple[list[str], list | None]:
    if texts is None:
        if labels is not None:
            raise InvalidRequest("validation_labels needs validation_texts.", param="validation_labels")
        return list(DEFAULT_VALIDATION_TEXTS), None
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest(
            "validation_texts must be a non-empty list of strings.", param="validation_texts"
        )
    if labels is not None and len(labels) != len(texts):
        raise InvalidRequest(
            f"{len(labels)} validation_labels for {len(texts)} validation_texts.", param="validation_labels"
        )
    if len(texts) > MAX_VALIDATION_TEXTS:  # evenly spaced, so a sorted file still gets every class
        keep = np.linspace(0, len(texts) - 1, MAX_VALIDATION_TEXTS).astype(int)
        texts = [texts[i] for i in keep]
        labels = [labels[i] for i in keep] if labels is not None else None
    return list(texts), list(labels) if labels is not None else None


def _served_outputs(predictor: rt.Predictor, texts: list[str]) -> np.ndarray:
    """What clients would receive: probabilities/values, or embeddings for a headless model."""
    if predictor.task == "embedding":
        return predictor.embed(texts)
    return predictor.predict(texts)


def _measure_latency(predictors: dict[str, rt.Predictor], texts: list[str]) -> dict[str, dict]:
    """Single-request latency per text and bucketed throughput, all precisions interleaved
    round by round and the best round kept, so a noisy neighbour hurts everyone equally."""
    single: dict[str, list[list[float]]] = {name: [] for name in predictors}
    batch: dict[str, list[float]] = {name: [] for name in predictors}
    for p in predictors.values():  # warm-up: first runs allocate and prepack
        _served_outputs(p, texts[:2])
    for _ in range(LATENCY_ROUNDS):
        for name, predictor in predictors.items():
            timings = []
            for text in texts:
                t0 = time.perf_counter()
                _served_outputs(predictor, [text])
                timings.append(time.perf_counter() - t0)
            single[name].append(timings)
            t0 = time.perf_counter()
            _served_outputs(predictor, texts)
            batch[name].append(time.perf_counter() - t0)
    report = {}
    for name in predictors:
        best = np.min(np.array(single[name]), axis=0) * 1000.0
        report[name] = {
            "p50": round(float(np.percentile(best, 50)), 3),
            "p95": round(float(np.percentile(best, 95)), 3),
            "seq_per_s": round(len(texts) / min(batch[name]), 1),
        }
    return report


def _predictor(
    path: Path, meta: dict, precision: str, *, logits_session: ort.InferenceSession | None = None
) -> rt.Predictor:
    """One-thread predictor of `path`; with `logits_session`, logits come from it and the full
    graph opens on first use (as the runtime serves a first-token graph)."""
    return rt.Predictor(
        session=(lambda: rt.make_session(path, intra_op_threads=1))
        if logits_session is not None
        else rt.make_session(path, intra_op_threads=1),
        logits_session=logits_session,
        tokenizer=rt.load_tokenizer(path.parent / rt.TOKENIZER_FILE, max_length=meta["max_length"]),
        meta=meta,
        precision=precision,
        model_file=path.name,
        artifact_dir=path.parent,
        memory_bytes=path.stat().st_size,
    )


def _check_against_torch(
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


# -- torch side -----------------------------------------------------------------------------
def _export_fp32(
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


# -- files ----------------------------------------------------------------------------------
def _read_model_meta(model_dir: Path) -> dict:
    meta = rt.read_meta(model_dir)
    if meta["task"] not in CLASSIFIER_TASKS:
        raise InvalidFile(
            f"{model_dir}/aiaas.json: export_model needs one of {', '.join(CLASSIFIER_TASKS)}; "
            "use export_base_model for headless encoders."
        )
    if not isinstance(meta.get("max_length"), int) or meta["max_length"] < 2:
        raise InvalidFile(f"{model_dir}/aiaas.json: 'max_length' must be an integer >= 2.")
    if meta["task"] != "regression" and not meta.get("labels"):
        raise InvalidFile(f"{model_dir}/aiaas.json: a classifier needs its 'labels'.")
    return {k: v for k, v in meta.items() if k != "runtime"}


def _tokenizer_config(model_dir: Path) -> dict:
    try:
        return json.loads((model_dir / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return {}


def _default_max_length(model_dir: Path) -> int:
    """sentence-transformers' max_seq_length if present, else what both tokenizer and positions allow."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        return int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
    limits = [512]
    with contextlib.suppress(OSError, ValueError, KeyError):
        limits.append(int(json.loads((model_dir / "config.json").read_text())["max_position_embeddings"]))
    tok_max = _tokenizer_config(model_dir).get("model_max_length")
    if isinstance(tok_max, int) and tok_max > 1:
        limits.append(tok_max)
    return min(limits)


def _write_tokenizer(model_dir: Path, dest: Path, *, max_length: int) -> int:
    """Save tokenizer.json with our truncation and no padding; return the pad token id."""
    from tokenizers import Tokenizer

    source = model_dir / rt.TOKENIZER_FILE
    if source.is_file():
        tokenizer = Tokenizer.from_file(str(source))
    else:  # a slow-tokenizer checkpoint (vocab.txt only): let transformers convert it once
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir, use_fast=True,
                                                  local_files_only=True).backend_tokenizer
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.save(str(dest))
    pad_token = _tokenizer_config(model_dir).get("pad_token")
    if isinstance(pad_token, dict):  # older configs store AddedToken dicts
        pad_token = pad_token.get("content")
    pad_id = tokenizer.token_to_id(pad_token) if isinstance(pad_token, str) else None
    return int(pad_id) if pad_id is not None else 0
