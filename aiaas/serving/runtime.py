"""The CPU inference runtime: ONNX Runtime + `tokenizers` + numpy, nothing heavier.

This module must never import torch or transformers (a test checks it in a fresh
process): importing transformers alone costs ~1.7 s of cold start, and a scale-to-zero
model pays cold start on every wake-up.

An artifact directory is what `aiaas.registry.export.export_model` wrote:
`aiaas.json` (task, labels, max_length, and a "runtime" section naming the chosen
ONNX file), `tokenizer.json`, and one or more `model.<precision>.onnx` files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from aiaas.core.errors import InvalidFile, InvalidRequest, Unavailable
from aiaas.serving import ensemble

# thresholds_in_label_order is re-exported: registry.export.guard calls rt.thresholds_in_label_order.
from aiaas.serving.interface import TASKS, ModelInfo
from aiaas.serving.interface import thresholds_in_label_order as thresholds_in_label_order  # noqa: PLC0414
from aiaas.serving.machine import cpu_features, has_int8_dot_product
from aiaas.serving.sessions import (  # re-exported: the export and tests open sessions through the runtime
    DISABLED_OPTIMIZERS as DISABLED_OPTIMIZERS,  # noqa: PLC0414
    MEMORY_BASE_BYTES as MEMORY_BASE_BYTES,  # noqa: PLC0414
    MEMORY_OVERHEAD as MEMORY_OVERHEAD,  # noqa: PLC0414
    first_token_accepted as first_token_accepted,  # noqa: PLC0414
    make_session as make_session,  # noqa: PLC0414
    open_first_token_session as open_first_token_session,  # noqa: PLC0414
    session_memory,
    stored_first_token_file,
)

logger = logging.getLogger(__name__)

META_FILE = "aiaas.json"
TOKENIZER_FILE = "tokenizer.json"
OUTPUT_LOGITS = "logits"
OUTPUT_EMBEDDINGS = "embeddings"

# Rows per length bucket inside one predict() call. Measured on MiniLM-L6 int8, 1 thread,
# 5-64 token sentences (seq/s): 1 -> 336, 4 -> 398, 8 -> 392, 16 -> 384, 32 -> 349, and
# unsorted batches of 32 -> 194 (padding to the longest member wastes half the work).
DEFAULT_BUCKET_SIZE = 4  # measured on MiniLM int8: 8-14% less CPU per sentence than 8 (bench/README.md)

SERVES_ENSEMBLES = True  # load_predictor loads `ensemble` artifacts (serving/ensemble.py): auto may keep one

# What a machine must have for a precision's kernels to behave as they did when the
# export measured them (see machine.has_int8_dot_product).
_REQUIREMENT_CHECKS = {"int8_dot_product": has_int8_dot_product}


def load_tokenizer(path: Path, *, max_length: int) -> Tokenizer:
    """The fast tokenizer with truncation on and padding off (we pad per length bucket).

    Also turns the tokenizers library's own thread pool off for this process unless the
    operator chose otherwise (TOKENIZERS_PARALLELISM): the runtime parallelises across its
    inference threads, and for its 4-text batches that pool only added work: 270 -> 190 us
    of CPU per batch on the benchmark sentences, the same ids.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


# Tokenizers of the loaded models, one per (tokenizer.json contents, max_length): models fine-tuned from one base
# share it. Building one is ~40 ms of CPU (up to ~200 ms under contention) during which the tokenizers library
# holds the GIL, stalling every request in the process (bench/README.md, "Density"); reading and hashing the file
# is ~1 ms. Weak: a tokenizer goes with the last model that uses it. Safe to share: the runtime never changes a
# loaded tokenizer, and one already serves all inference threads.
_tokenizers: weakref.WeakValueDictionary[tuple[bytes, int], Tokenizer] = weakref.WeakValueDictionary()
_tokenizers_lock = threading.Lock()


def shared_tokenizer(path: Path, *, max_length: int) -> Tokenizer:
    """load_tokenizer's tokenizer, the same object for every model with the same file contents and max_length."""
    data = path.read_bytes()
    key = (hashlib.sha256(data).digest(), max_length)
    with _tokenizers_lock:
        tokenizer = _tokenizers.get(key)
    if tokenizer is None:
        tokenizer = load_tokenizer(path, max_length=max_length)
        with _tokenizers_lock:
            tokenizer = _tokenizers.setdefault(key, tokenizer)
    return tokenizer


def _encode(tokenizer: Tokenizer, texts: Sequence[str]) -> list[Encoding]:
    """encode_batch without character offsets where tokenizers has it (>= 0.20): the runtime
    only needs ids, and skipping offsets cut 190 -> 163 us of CPU per 4 benchmark sentences."""
    fast = getattr(tokenizer, "encode_batch_fast", None)
    encodings: list[Encoding] = fast(list(texts)) if fast is not None else tokenizer.encode_batch(list(texts))
    return encodings


def _unknown_token_id(tokenizer: Tokenizer) -> int | None:
    """The id of the tokenizer's unknown token ([UNK] for WordPiece, <unk> for BPE/SentencePiece)."""
    model = getattr(tokenizer, "model", None)
    name = getattr(model, "unk_token", None)
    for candidate in ((name,) if isinstance(name, str) else ()) + ("[UNK]", "<unk>"):
        token_id = tokenizer.token_to_id(candidate)
        if token_id is not None:
            return int(token_id)
    return None


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probs: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return probs


def sigmoid(logits: np.ndarray) -> np.ndarray:
    # exp(-log(1 + exp(-x))) never overflows, unlike 1 / (1 + exp(-x)) for large negative x.
    probs: np.ndarray = np.exp(-np.logaddexp(0.0, -logits))
    return probs


def read_meta(artifact_dir: Path) -> dict[str, Any]:
    path = Path(artifact_dir) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidFile(f"'{artifact_dir}' has no {META_FILE}; it is not a model artifact.") from None
    except (OSError, ValueError) as exc:
        raise InvalidFile(f"Could not read {path}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("task") not in TASKS:
        raise InvalidFile(f"{path}: 'task' must be one of {', '.join(TASKS)}.")
    return meta


@dataclass(frozen=True)
class InferenceResult:
    """One forward pass: what the caller asked for, plus token counts for usage metering."""

    probabilities: np.ndarray | None  # [N, C] (or [N, 1] raw values for regression)
    embeddings: np.ndarray | None  # [N, H] float32, L2-normalised
    token_counts: list[int]
    unknown_counts: list[int] | None = None  # [UNK] tokens per text (monitoring); None: no unknown token


class Predictor:
    """A loaded model artifact. Thread-safe: ONNX Runtime sessions and tokenizers may be
    called from several threads at once, so one Predictor serves a whole thread pool.

    `session` is the full graph, or a function that opens it on first use (`memory_bytes` then
    grows by `memory_when_opened`). `logits_session`, when given, answers requests for logits
    alone: the first-token graph (first_token.py)."""

    def __init__(
        self,
        *,
        session: ort.InferenceSession | Callable[[], ort.InferenceSession],
        tokenizer: Tokenizer,
        meta: dict[str, Any],
        precision: str,
        model_file: str,
        artifact_dir: Path,
        memory_bytes: int,
        bucket_size: int = DEFAULT_BUCKET_SIZE,
        logits_session: ort.InferenceSession | None = None,
        memory_when_opened: int = 0,
    ) -> None:
        if bucket_size < 1:
            raise ValueError(f"bucket_size must be >= 1, got {bucket_size}")
        if callable(session) and logits_session is None:
            raise ValueError("a lazily opened session needs a logits_session to describe the graph")
        self._session: ort.InferenceSession | None = None if callable(session) else session
        self._open_session = session if callable(session) else None
        self._open_lock = threading.Lock()
        self._logits_session = logits_session
        self._closed = False
        self._tokenizer = tokenizer
        self.meta = meta
        self.task: str = meta["task"]
        self.labels: list[str] = [str(label) for label in meta.get("labels") or []]
        self.thresholds: list[float] | None = thresholds_in_label_order(meta.get("thresholds"), self.labels)
        self.max_length: int = int(meta["max_length"])
        self.precision = precision
        self.model_file = model_file
        self.artifact_dir = artifact_dir
        self.memory_bytes = memory_bytes  # what is open now; grows by memory_when_opened with the lazy graph
        self._memory_when_opened = memory_when_opened
        self.bucket_size = bucket_size
        if self._session is not None:
            described = self._session
            self.outputs: frozenset[str] = frozenset(o.name for o in described.get_outputs())
        else:  # the full graph opens later: its outputs are the ones the export recorded
            assert logits_session is not None
            described = logits_session
            recorded = (meta.get("runtime") or {}).get("outputs") or []
            self.outputs = frozenset([*recorded, *(o.name for o in described.get_outputs())])
        self._input_names = [i.name for i in described.get_inputs()]
        runtime = meta.get("runtime") or {}
        self._pad_id = int(runtime.get("pad_token_id", 0))
        self._unk_id = _unknown_token_id(tokenizer)
        missing = {"input_ids", "attention_mask"} - set(self._input_names)
        if missing:
            raise InvalidFile(f"{model_file}: graph lacks inputs {sorted(missing)}.")
        self.info = _info(meta, self.labels, self.thresholds, self.outputs)

    # -- public API ---------------------------------------------------------------------
    def predict(self, texts: list[str]) -> np.ndarray:
        """[N, C] probabilities (softmax single-label, sigmoid multi-label), [N, 1] raw for regression."""
        result = self.infer(texts, probabilities=True, embeddings=False)
        assert result.probabilities is not None
        return result.probabilities

    def embed(self, texts: list[str]) -> np.ndarray:
        """[N, H] float32, mean-pooled over real tokens, L2-normalised."""
        result = self.infer(texts, probabilities=False, embeddings=True)
        assert result.embeddings is not None
        return result.embeddings

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens the model sees per text (after truncation, special tokens included, no padding)."""
        self._check_texts(texts)
        return [len(e.ids) for e in _encode(self._tokenizer, texts)]

    def infer(
        self, texts: list[str], *, probabilities: bool = True, embeddings: bool = False
    ) -> InferenceResult:
        """Tokenise once and return any of the outputs together with token counts."""
        self._check_texts(texts)
        wanted: list[str] = []
        if probabilities:
            if OUTPUT_LOGITS not in self.outputs:
                raise InvalidRequest(
                    "This model has no classification head; it only produces embeddings.", param="model"
                )
            wanted.append(OUTPUT_LOGITS)
        if embeddings:
            if OUTPUT_EMBEDDINGS not in self.outputs:
                raise InvalidRequest("This model does not produce embeddings.", param="model")
            wanted.append(OUTPUT_EMBEDDINGS)
        encodings = _encode(self._tokenizer, texts)
        token_ids = [e.ids for e in encodings]
        raw = self._run_bucketed(token_ids, wanted)
        probs = self._postprocess(raw[OUTPUT_LOGITS]) if probabilities else None
        return InferenceResult(
            probabilities=probs,
            embeddings=raw.get(OUTPUT_EMBEDDINGS),
            token_counts=[len(ids) for ids in token_ids],
            # list.count runs in C: about 0.2 us for a 64-token text.
            unknown_counts=None if self._unk_id is None else [ids.count(self._unk_id) for ids in token_ids],
        )

    def close(self) -> None:
        """Drop the sessions so their memory can be freed once in-flight calls return."""
        with self._open_lock:
            self._closed = True
            self._session = self._logits_session = None
            self._open_session = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def first_token_logits(self) -> bool:
        """Whether logits come from the first-token graph."""
        return self._logits_session is not None

    def __repr__(self) -> str:
        return f"Predictor(task={self.task!r}, precision={self.precision!r}, file={self.model_file!r})"

    # -- internals ----------------------------------------------------------------------
    @staticmethod
    def _check_texts(texts: Sequence[str]) -> None:
        if not isinstance(texts, list | tuple):
            raise InvalidRequest("Input must be a list of strings.", param="input")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidRequest(
                    f"Input item {i} must be a string, got {type(text).__name__}.", param="input"
                )

    def _run_bucketed(self, token_ids: list[list[int]], wanted: list[str]) -> dict[str, np.ndarray]:
        """Run length-sorted buckets so each one pads only to its own longest member,
        then scatter the rows back to the caller's order."""
        session = self._session_for(wanted)
        n = len(token_ids)
        lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=n)
        order = np.argsort(lengths, kind="stable")
        results: dict[str, np.ndarray] = {}
        for start in range(0, n, self.bucket_size):
            rows = order[start : start + self.bucket_size]
            width = int(lengths[rows].max())
            input_ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
            attention = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                input_ids[r, : lengths[i]] = token_ids[i]
                attention[r, : lengths[i]] = 1
            feeds = {"input_ids": input_ids, "attention_mask": attention}
            if "token_type_ids" in self._input_names:  # graphs exported elsewhere may want it
                feeds["token_type_ids"] = np.zeros_like(input_ids)
            outputs = session.run(wanted, feeds)
            for name, value in zip(wanted, outputs, strict=True):
                if name not in results:
                    results[name] = np.empty((n, *value.shape[1:]), dtype=np.float32)
                results[name][rows] = value
        if n == 0:  # still answer with the right number of columns
            for name in wanted:
                results[name] = np.zeros((0, self._output_width(name)), dtype=np.float32)
        return results

    def _session_for(self, wanted: list[str]) -> ort.InferenceSession:
        logits_only = self._logits_session
        if logits_only is not None and wanted == [OUTPUT_LOGITS]:
            return logits_only
        session = self._session
        if session is None:
            with self._open_lock:
                if self._session is None and self._open_session is not None:
                    self._session = self._open_session()
                    self._open_session = None
                    self.memory_bytes += self._memory_when_opened
                session = self._session
        if session is None:
            raise Unavailable("This model was unloaded; retry the request.")
        return session

    def _output_width(self, name: str) -> int:
        session = self._logits_session if name == OUTPUT_LOGITS and self._logits_session else self._session
        for output in session.get_outputs() if session is not None else []:
            if output.name == name and isinstance(output.shape[-1], int):
                return int(output.shape[-1])
        return len(self.labels) if name == OUTPUT_LOGITS else int(self.meta["runtime"]["embedding_dim"])

    def _postprocess(self, logits: np.ndarray) -> np.ndarray:
        if self.task == "single_label_classification":
            return softmax(logits)
        if self.task == "multi_label_classification":
            return sigmoid(logits)
        return logits  # regression: raw values


def _info(
    meta: dict[str, Any], labels: list[str], thresholds: list[float] | None, outputs: frozenset[str]
) -> ModelInfo:
    """What the serving interface says about a loaded model (serving/interface.py)."""
    return ModelInfo(
        task=meta["task"],
        labels=tuple(labels),
        thresholds=None if thresholds is None else tuple(thresholds),
        embeddings=OUTPUT_EMBEDDINGS in outputs,
        family=meta.get("family") or (meta.get("runtime") or {}).get("family"),
    )


def unmet_requirements(runtime: dict[str, Any], precision: str) -> list[Any]:
    """What the export asked of the CPU for `precision` that this one lacks (an unknown requirement is unmet):
    where not empty, a load serves fp32 instead."""
    requires = runtime.get("requires") or {}
    if not isinstance(requires, dict):
        return [requires]
    features = cpu_features()
    return [req for req in requires.get(precision, []) if not _REQUIREMENT_CHECKS.get(req, lambda _f: False)(features)]


def _choose_file(artifact_dir: Path, runtime: dict[str, Any], precision: str | None) -> tuple[str, str]:
    files: dict[str, str] = runtime.get("files") or {}
    chosen = precision or runtime.get("precision", "fp32")
    if chosen not in files:
        raise InvalidRequest(
            f"Artifact has no '{chosen}' model; available: {', '.join(sorted(files)) or 'none'}.",
            param="precision",
        )
    unmet = unmet_requirements(runtime, chosen)
    if unmet and chosen != "fp32":
        # The accuracy guard measured this precision on the exporting machine's kernels;
        # without the same instructions here, its numbers would not hold. fp32 always does.
        logger.warning(
            "%s: %s needs %s, which this CPU lacks; serving fp32 instead", artifact_dir, chosen, unmet
        )
        chosen = "fp32"
    return chosen, files[chosen]


ServedModel = Predictor | ensemble.EnsemblePredictor  # what load_predictor returns: one graph, or an ensemble


def load_predictor(
    artifact_dir: Path, *, intra_op_threads: int = 1, precision: str | None = None,
    full_graph: Callable[[], bytes] | None = None,
) -> ServedModel:  # fmt: skip
    """Load an exported artifact. `precision` overrides the export's choice (e.g. "fp32"). `full_graph`: where a
    one-graph model served by its first-token graph gets its full graph's bytes when an embeddings request opens
    it (the loader reads the stored artifact again); without it they are read now and kept (load_graph).

    An ensemble artifact (serving/ensemble.py) loads its two members with `load_graph` and answers
    as one model: an EnsemblePredictor, which has a Predictor's whole public surface."""
    artifact_dir = Path(artifact_dir)
    meta = read_meta(artifact_dir)
    if ensemble.is_ensemble(meta):
        def member(path: Path, wanted: str | None) -> ensemble.Member:
            return load_graph(path, intra_op_threads=intra_op_threads, precision=wanted)

        return ensemble.load_ensemble(artifact_dir, meta, member, precision=precision)
    return load_graph(artifact_dir, intra_op_threads=intra_op_threads, precision=precision, meta=meta,
                      full_graph=full_graph)


def load_graph(
    artifact_dir: Path, *, intra_op_threads: int = 1, precision: str | None = None,
    meta: dict[str, Any] | None = None, full_graph: Callable[[], bytes] | None = None,
) -> Predictor:  # fmt: skip
    """Load a one-graph artifact (transformer, tfidf-linear, char-cnn): one ONNX session and its tokenizer."""
    artifact_dir = Path(artifact_dir)
    meta = read_meta(artifact_dir) if meta is None else meta
    runtime = meta.get("runtime")
    if not isinstance(runtime, dict):
        raise InvalidFile(f"{artifact_dir / META_FILE} has no 'runtime' section; export the model first.")
    if not isinstance(meta.get("max_length"), int) or meta["max_length"] < 2:
        raise InvalidFile(f"{artifact_dir / META_FILE}: 'max_length' must be an integer >= 2.")
    chosen, model_file = _choose_file(artifact_dir, runtime, precision)
    model_path = artifact_dir / model_file
    tokenizer_path = artifact_dir / TOKENIZER_FILE
    for path in (model_path, tokenizer_path):
        if not path.is_file():
            raise InvalidFile(f"Artifact file missing: {path}")
    tokenizer = shared_tokenizer(tokenizer_path, max_length=meta["max_length"])
    memory, full_memory = session_memory(model_path.stat().st_size), 0
    logits_session, stored = None, _stored_first_token(artifact_dir, runtime, chosen)
    if first_token_accepted(runtime, chosen):
        logits_session = open_first_token_session(model_path, intra_op_threads=intra_op_threads, stored=stored)
    session: ort.InferenceSession | Callable[[], ort.InferenceSession]
    if logits_session is not None:
        # The full graph (embeddings) opens on first use. Budgeted is what is open: the first-token session (and
        # the full graph's bytes, where kept); the full session's share is added if and when it opens
        # (Predictor._session_for).
        source, kept = _full_graph_source(model_path, full_graph)
        session = lambda: make_session(source(), intra_op_threads=intra_op_threads)
        full_memory = memory
        memory = session_memory((stored or model_path).stat().st_size) + kept
    else:
        session = make_session(model_path, intra_op_threads=intra_op_threads)
    predictor = Predictor(
        logits_session=logits_session,
        session=session,
        tokenizer=tokenizer,
        meta=meta,
        precision=chosen,
        model_file=model_file,
        artifact_dir=artifact_dir,
        memory_bytes=memory,
        bucket_size=int(runtime.get("bucket_size", DEFAULT_BUCKET_SIZE)),
        memory_when_opened=full_memory,
    )
    logger.info(
        "loaded %s (%s, %s%s, ~%d MiB)",
        artifact_dir,
        meta["task"],
        chosen,
        ", first-token logits" if logits_session is not None else "",
        memory >> 20,
    )
    return predictor


def _full_graph_source(model_path: Path, full_graph: Callable[[], bytes] | None) -> tuple[Callable[[], bytes], int]:
    """Where a lazily opened full graph's bytes come from, and how many of them are kept until then: `full_graph`
    (nothing kept), else the file read now and kept (an artifact decrypted for a load is deleted when it returns)."""
    if full_graph is not None:
        return full_graph, 0
    graph = model_path.read_bytes()

    def kept_graph() -> bytes:
        return graph

    return kept_graph, len(graph)


def _stored_first_token(artifact_dir: Path, runtime: dict[str, Any], precision: str) -> Path | None:
    """The first-token graph the export stored for `precision`, where it did and the file is there."""
    name = stored_first_token_file(runtime, precision)
    path = artifact_dir / name if name is not None else None
    return path if path is not None and path.is_file() else None
