"""ONNX Runtime sessions for the serving runtime (runtime.py): how one is configured, what a
loaded graph is budgeted at, and the first-token logits graph (first_token.py) an export
stores next to the graph it narrows.

An export writes the first-token graph once, pre-optimised (`write_first_token_graph`, named in
aiaas.json under runtime.first_token.<precision>: "file", and "onnxruntime", the version that
wrote it), so a cold load only opens it. Artifacts exported before that, or by another ONNX
Runtime version, still load: the runtime rewrites the graph at load, as it always did.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnxruntime as ort

logger = logging.getLogger(__name__)

# ONNX Runtime keeps prepacked weights, an arena and per-run buffers next to the file
# contents. Measured RSS growth on load + first predict, MiniLM-L6: fp32 (86 MiB file)
# 129 MiB, int8 (22 MiB file) 55 MiB; size * 1.5 + 24 MiB covers both.
MEMORY_OVERHEAD = 1.5
MEMORY_BASE_BYTES = 24 << 20

# ORT graph rewrites the runtime turns off. SkipLayerNormFusion merges a residual Add with
# the LayerNormalization after it; on the dynamic-int8 graphs export_model writes, ONNX
# Runtime 1.32's fused kernel took 240 us where Add + LayerNormalization take 40 us for the
# same [4, 12, 384] tensor, 18% of MiniLM-L6's forward time; without it MiniLM-L6 int8 ran
# 510-516 -> 599-643 sentences/s on one thread (buckets of 4) and fp32 was unchanged
# (bench/README.md, "Serving: what changed").
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)

FIRST_TOKEN_SUFFIX = ".first_token.onnx"


def make_session(
    model: Path | bytes, *, intra_op_threads: int = 1, optimized_model_path: Path | None = None
) -> ort.InferenceSession:
    """An InferenceSession (of a graph file, or of serialized graph bytes) configured for a
    shared CPU host.

    - intra_op threads: how many cores one request may use (1 = scale by processes/threads
      outside, the best throughput per core for small BERTs);
    - inter_op 1 + sequential: these graphs have no parallel branches worth a pool;
    - allow_spinning 0: idle pool threads sleep instead of burning a core that another
      model or tenant needs;
    - ORT_ENABLE_ALL: attention/LayerNorm/GELU fusions, measured as fast as an offline
      onnxruntime.transformers optimisation, so the artifact stays a plain graph;
      minus DISABLED_OPTIMIZERS, which are slower than what they replace.

    `optimized_model_path`, when given, receives the graph as ONNX Runtime rewrote it
    (for inspecting which fusions ran).
    """
    if not isinstance(intra_op_threads, int) or isinstance(intra_op_threads, bool) or intra_op_threads < 1:
        raise ValueError(f"intra_op_threads must be an integer >= 1, got {intra_op_threads!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    return ort.InferenceSession(
        model if isinstance(model, bytes) else str(model),
        sess_options=options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(DISABLED_OPTIMIZERS),
    )


def onnxruntime_version() -> str:
    """The ONNX Runtime version a stored pre-optimised graph is recorded with."""
    return str(ort.__version__)


def session_memory(graph_bytes: int) -> int:
    """What an open session of a graph of `graph_bytes` is budgeted at (MEMORY_OVERHEAD)."""
    return int(graph_bytes * MEMORY_OVERHEAD) + MEMORY_BASE_BYTES


def first_token_accepted(runtime: dict[str, Any], precision: str) -> bool:
    """Whether the export's accuracy guard passed the first-token graph of this precision."""
    decision = (runtime.get("first_token") or {}).get(precision)
    return isinstance(decision, dict) and decision.get("accepted") is True


def stored_first_token_file(runtime: dict[str, Any], precision: str) -> str | None:
    """The file name of the first-token graph the export stored for `precision`, where it did and with
    this ONNX Runtime version (the file holds ORT's own fused operators, whose definitions are ORT's)."""
    decision = (runtime.get("first_token") or {}).get(precision)
    if not isinstance(decision, dict) or decision.get("onnxruntime") != onnxruntime_version():
        return None
    name = decision.get("file")
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        return None
    return name


def first_token_file_name(model_file: str) -> str:
    """model.int8.onnx -> model.int8.first_token.onnx"""
    stem = model_file[: -len(".onnx")] if model_file.endswith(".onnx") else model_file
    return stem + FIRST_TOKEN_SUFFIX


def write_first_token_graph(model: Path) -> Path | None:
    """Write `model`'s first-token logits graph next to it (first_token_file_name), pre-optimised;
    None when it has no first-token head. Done once, at export, instead of at every load: the rewrite
    is Python work on the whole graph, and ONNX Runtime's graph optimisation is most of a session's
    creation time (bench/README.md, "Density").

    Pre-optimised means: as ONNX Runtime rewrites it at ORT_ENABLE_EXTENDED (attention, LayerNorm,
    GELU and quantised-MatMul fusions, minus DISABLED_OPTIMIZERS), which depends on nothing of the
    machine; the layout rewrites of ORT_ENABLE_ALL may be CPU-specific, so make_session still runs
    them where the graph is served (there is nothing left for the extended level to do)."""
    import onnx

    from aiaas.serving.first_token import first_token_graph

    rewritten = first_token_graph(onnx.load(str(model)))
    if rewritten is None:
        return None
    out = model.parent / first_token_file_name(model.name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(
        rewritten[0].SerializeToString(),
        sess_options=options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(DISABLED_OPTIMIZERS),
    )
    return out


def open_first_token_session(
    model: Path, *, intra_op_threads: int = 1, stored: Path | None = None
) -> ort.InferenceSession | None:
    """A session of `model`'s first-token logits graph (first_token.py), or None where the graph
    has no first-token head or it does not load (the full graph then answers). `stored`: the graph
    as the export wrote it, opened as it is; without it, `model` is rewritten here (older exports)."""
    try:
        if stored is not None:
            return make_session(stored, intra_op_threads=intra_op_threads)
        import onnx

        from aiaas.serving.first_token import first_token_graph

        rewritten = first_token_graph(onnx.load(str(model)))
        if rewritten is None:
            return None
        return make_session(rewritten[0].SerializeToString(), intra_op_threads=intra_op_threads)
    except Exception as exc:  # noqa: BLE001 - an optimisation: never worth failing the load over
        logger.warning("%s: first-token graph unavailable (%s); serving the full graph", model, exc)
        return None
