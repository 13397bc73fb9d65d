"""Export and serve an `ensemble` model (aiaas.training.ensemble) as one model.

The two members read text through different tokenizers (word pieces, characters), and
the runtime feeds a graph from one tokenizer, so one merged ONNX graph cannot take the
same inputs; the ensemble is one predictor over the two members' exported sessions:

    artifact/aiaas.json          {"family": "ensemble", "weight", "members", "runtime": {...}}
    artifact/transformer/        the transformer member's artifact (its own precision choice)
    artifact/tfidf-linear/       the tfidf-linear member's artifact

The serving runtime loads it (aiaas.serving.ensemble, through `load_predictor`). The
export checks the loaded ensemble against its members' own predictions and measures its
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
from aiaas.serving.ensemble import EnsemblePredictor, combine
from aiaas.training import ensemble

logger = logging.getLogger(__name__)

LATENCY_SAMPLE = 64
MAX_ABS_DIFF = 1e-5


def _load(out_dir: Path) -> EnsemblePredictor:
    """The artifact as the serving runtime loads it: through `load_predictor`, like every model."""
    served = rt.load_predictor(out_dir)
    if not isinstance(served, EnsemblePredictor):
        served.close()
        raise AiaasError(f"{out_dir} did not load as an ensemble.")
    return served


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

    served = _load(out_dir)
    try:
        runtime.update(_check_served(served, texts, labels, started))
    finally:
        served.close()
    (out_dir / rt.META_FILE).write_text(json.dumps(full, indent=2))
    logger.info("exported ensemble %s -> %s", model_dir, out_dir)
    return runtime


def _check_served(
    served: EnsemblePredictor, texts: list[str], labels: list | None, started: float
) -> dict[str, Any]:
    """The loaded ensemble answers as its members' weighted average (calibrated after combining, where
    auto fit that); its latency, and accuracy on validation (single-label) when the labels are known."""
    got = served.predict(texts)
    first, second = (served.members[name].predict(texts) for name in ensemble.MEMBERS)
    reference = combine(served.task, served.weight, first, second, served.calibration)
    diff = float(np.abs(got - reference).max()) if len(texts) else 0.0
    if not diff <= MAX_ABS_DIFF:
        raise AiaasError(
            f"The ensemble's scores differ from its members' calibrated weighted average by {diff:.2e}."
        )
    sample = texts[:LATENCY_SAMPLE]
    latency = measure_latency(
        {"ensemble": served.predict, "transformer": served.members[ensemble.MEMBERS[0]].predict}, sample
    )
    checked: dict[str, Any] = {
        "ensemble_vs_members_max_abs_diff": diff,
        **latency_fields(latency),
        "validation_texts": len(texts),
        "export_seconds": round(time.perf_counter() - started, 2),
    }
    if labels is not None and served.task == "single_label_classification":
        index = {label: i for i, label in enumerate(served.labels)}
        truth = np.array([index.get(label, -1) for label in labels])
        checked["accuracy"] = {"ensemble": float((got.argmax(axis=1) == truth).mean())}
    return checked
