"""Export and serve an `ensemble` model (aiaas.training.ensemble) as one model.

The two members read text through different tokenizers (word pieces, characters), and
the runtime feeds a graph from one tokenizer, so one merged ONNX graph cannot take the
same inputs; the ensemble is one predictor over the two members' exported sessions:

    artifact/aiaas.json          {"family": "ensemble", "weight", "members", "runtime": {...}}
    artifact/transformer/        the transformer member's artifact (its own precision choice)
    artifact/tfidf-linear/       the tfidf-linear member's artifact

`EnsemblePredictor` answers what `aiaas.serving.runtime.Predictor` answers (predict,
infer, count_tokens, embed, labels, thresholds, info, close): scores are the weighted
average of the members' served scores; embeddings and token counts come from the
transformer. The export checks it against the members' own predictions and measures its
in-process cost next to the transformer alone.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.core.errors import AiaasError, InvalidRequest
from aiaas.registry.export.shared import latency_fields, measure_latency, validation_set
from aiaas.serving import runtime as rt
from aiaas.serving.interface import ModelInfo
from aiaas.training import ensemble

logger = logging.getLogger(__name__)

LATENCY_SAMPLE = 64
MAX_ABS_DIFF = 1e-5


class EnsemblePredictor:
    """One model over two member predictors: p = w * p_transformer + (1 - w) * p_tfidf-linear."""

    def __init__(self, meta: dict, members: dict[str, rt.Predictor], artifact_dir: Path) -> None:
        self.meta = meta
        self.members = members
        self.weight = float(meta["weight"])
        self.task: str = meta["task"]
        self.labels: list[str] = [str(label) for label in meta.get("labels") or []]
        self.thresholds = rt.thresholds_in_label_order(meta.get("thresholds"), self.labels)
        self.max_length = int(meta["max_length"])
        first = members[ensemble.MEMBERS[0]]
        self.precision = first.precision
        self.model_file = f"{ensemble.MEMBERS[0]}/{first.model_file}+{ensemble.MEMBERS[1]}/"
        self.model_file += members[ensemble.MEMBERS[1]].model_file
        self.artifact_dir = artifact_dir
        self.memory_bytes = sum(m.memory_bytes for m in members.values())
        self.bucket_size = first.bucket_size
        self.outputs = first.outputs
        self.info = ModelInfo(
            task=self.task,
            labels=tuple(self.labels),
            thresholds=None if self.thresholds is None else tuple(self.thresholds),
            embeddings=first.info.embeddings,
            family=ensemble.FAMILY,
        )

    def predict(self, texts: list[str]) -> np.ndarray:
        result = self.infer(texts, probabilities=True, embeddings=False)
        assert result.probabilities is not None
        return result.probabilities

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.members[ensemble.MEMBERS[0]].embed(texts)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self.members[ensemble.MEMBERS[0]].count_tokens(texts)

    def infer(
        self, texts: list[str], *, probabilities: bool = True, embeddings: bool = False
    ) -> rt.InferenceResult:
        a, b = (self.members[name] for name in ensemble.MEMBERS)
        first = a.infer(texts, probabilities=probabilities, embeddings=embeddings)
        probs = None
        if probabilities:
            assert first.probabilities is not None
            probs = (self.weight * first.probabilities + (1 - self.weight) * b.predict(texts)).astype(
                np.float32
            )
        return rt.InferenceResult(
            probabilities=probs, embeddings=first.embeddings, token_counts=first.token_counts
        )

    def close(self) -> None:
        for member in self.members.values():
            member.close()

    @property
    def closed(self) -> bool:
        return all(m.closed for m in self.members.values())

    @property
    def first_token_logits(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"EnsemblePredictor(task={self.task!r}, weight={self.weight:g})"


def load_ensemble_predictor(
    artifact_dir: Path, *, intra_op_threads: int = 1, precision: str | None = None
) -> EnsemblePredictor:
    """What `rt.load_predictor` should return for an artifact whose aiaas.json says family "ensemble"."""
    artifact_dir = Path(artifact_dir)
    meta = rt.read_meta(artifact_dir)
    if meta.get("family") != ensemble.FAMILY:
        raise InvalidRequest(f"{artifact_dir} is not an ensemble artifact.", param="model")
    members = {}
    try:
        for name in ensemble.MEMBERS:
            # tfidf-linear is fp32 only; a requested precision applies to the transformer.
            wanted = precision if name == ensemble.MEMBERS[0] else None
            members[name] = rt.load_predictor(
                artifact_dir / name, intra_op_threads=intra_op_threads, precision=wanted
            )
    except Exception:
        for member in members.values():
            member.close()
        raise
    return EnsemblePredictor(meta, members, artifact_dir)


def export_ensemble_model(
    model_dir: Path,
    out_dir: Path,
    *,
    validation_texts: list[str] | None = None,
    validation_labels: list | None = None,
    precision: str = "auto",
) -> dict:
    """Export both members (each by its own exporter and guard), then the ensemble's aiaas.json."""
    from aiaas.registry.export import export_trained_model

    started = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    meta = json.loads((model_dir / ensemble.META_FILE).read_text())
    texts, labels = validation_set(validation_texts, validation_labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = {}
    for name in ensemble.MEMBERS:
        reports[name] = export_trained_model(
            model_dir / name, out_dir / name, validation_texts=validation_texts,
            validation_labels=validation_labels, precision=precision if name == ensemble.MEMBERS[0] else "auto",
        )  # fmt: skip
    runtime: dict[str, Any] = {
        "family": ensemble.FAMILY,
        "members": {name: {"dir": name, "precision": r.get("precision"), "file": r.get("file")}
                    for name, r in reports.items()},
        "precision": reports[ensemble.MEMBERS[0]].get("precision"),
    }  # fmt: skip
    full = {**{k: v for k, v in meta.items() if k != "runtime"}, "runtime": runtime}
    (out_dir / rt.META_FILE).write_text(json.dumps(full, indent=2))

    served = load_ensemble_predictor(out_dir)
    try:
        got = served.predict(texts)
        w = served.weight
        reference = w * served.members[ensemble.MEMBERS[0]].predict(texts)
        reference = reference + (1 - w) * served.members[ensemble.MEMBERS[1]].predict(texts)
        diff = float(np.abs(got - reference).max()) if len(texts) else 0.0
        if not diff <= MAX_ABS_DIFF:
            raise AiaasError(
                f"The ensemble's scores differ from its members' weighted average by {diff:.2e}."
            )
        sample = texts[:LATENCY_SAMPLE]
        latency = measure_latency(
            {"ensemble": served.predict, "transformer": served.members[ensemble.MEMBERS[0]].predict}, sample
        )
        runtime.update(
            {
                "ensemble_vs_members_max_abs_diff": diff,
                **latency_fields(latency),
                "validation_texts": len(texts),
                "export_seconds": round(time.perf_counter() - started, 2),
            }
        )
        if labels is not None and served.task == "single_label_classification":
            index = {label: i for i, label in enumerate(served.labels)}
            truth = np.array([index.get(label, -1) for label in labels])
            runtime["accuracy"] = {"ensemble": float((got.argmax(axis=1) == truth).mean())}
    finally:
        served.close()
    (out_dir / rt.META_FILE).write_text(json.dumps(full, indent=2))
    logger.info("exported ensemble %s -> %s", model_dir, out_dir)
    return runtime
