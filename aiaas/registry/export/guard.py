"""Verdicts: every cheaper graph is judged against fp32 by the accuracy guard
(serving/agreement.py) on what clients would receive, and one precision is chosen.

`Trial` holds what candidates are judged against and what judging produced; the precision
candidates (precisions.py) add themselves to it. For classifiers the first-token graph
the runtime derives (serving/first_token.py) gets its own verdict, `judge_first_token`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aiaas.protocol.tasks import EMBEDDING
from aiaas.registry.export.shared import measure_latency
from aiaas.serving import runtime as rt
from aiaas.serving import sessions
from aiaas.serving.agreement import GuardDecision, guard_decision

if TYPE_CHECKING:
    import onnxruntime as ort

logger = logging.getLogger(__name__)

# A cheaper precision must beat fp32 by this much, or the accuracy risk isn't worth it
# (single-request timings on a shared 2-core host jitter by a few percent).
MIN_SPEEDUP = 1.10


@dataclass
class Trial:
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
        predictor = one_thread_predictor(path, self.meta, precision)
        decision = self.verdict(predictor)
        self.predictors[precision] = predictor
        self.decisions[precision] = decision
        return decision

    def verdict(self, predictor: rt.Predictor) -> GuardDecision:
        """The accuracy guard's decision on what `predictor` serves for the validation texts."""
        return guard_decision(
            task=self.meta["task"],
            reference=self.served,
            candidate=served_outputs(predictor, self.texts),
            labels=self.labels,
            label_names=self.meta.get("labels"),
            thresholds=rt.thresholds_in_label_order(
                self.meta.get("thresholds"), [str(label) for label in self.meta.get("labels") or []]
            ),
        )

    def latency(self, texts: list[str]) -> dict[str, dict]:
        """measure_latency of every predictor judged so far (fp32 included)."""
        return measure_latency(_served_by(self.predictors), texts)


def choose(
    requested: str, decisions: dict[str, GuardDecision], latency: dict[str, dict], candidates: dict[str, dict]
) -> tuple[str, str]:
    """The precision to serve and why: the requested one if it passed, else the fastest that
    passed and is MIN_SPEEDUP faster than fp32, else fp32."""
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


def accuracy_report(decisions: dict[str, GuardDecision]) -> dict:
    report: dict = {}
    for name, d in decisions.items():
        if d.accuracy_reference is not None:
            report.setdefault("fp32", d.accuracy_reference)
            report[name] = d.accuracy_candidate
    return report


def judge_first_token(trial: Trial, precision: str, latency_texts: list[str]) -> dict:
    """The chosen graph with its last layer narrowed to the first token (serving/first_token.py),
    judged against fp32 by the same guard; the runtime serves logits from it only if accepted.

    The narrowed graph is written once, here, next to the graph it narrows, and named in the
    verdict ("file") when accepted: a load then opens it instead of rewriting the graph in Python."""
    path = trial.out_dir / trial.meta["runtime"]["files"][precision]
    try:
        stored = sessions.write_first_token_graph(path)
    except Exception as exc:  # noqa: BLE001 - an optimisation: the full graph serves without it
        logger.warning("%s: first-token rewrite failed (%s)", path, exc)
        return {"accepted": False, "reason": f"the first-token rewrite failed: {exc}"}
    if stored is None:
        return {"accepted": False, "reason": "the graph has no first-token head to narrow"}
    session = rt.open_first_token_session(path, intra_op_threads=1, stored=stored)
    if session is None:
        stored.unlink(missing_ok=True)
        return {"accepted": False, "reason": "the first-token graph does not load"}
    full = trial.predictors[precision]
    narrowed = one_thread_predictor(path, trial.meta, precision, logits_session=session)
    decision = trial.verdict(narrowed)
    speed = measure_latency(_served_by({"full": full, "first_token": narrowed}), latency_texts)
    logger.info("first-token %s graph: %s", precision, decision.reason)
    verdict = {**decision.to_dict(), "throughput_seq_s": {name: m["seq_per_s"] for name, m in speed.items()}}
    if decision.accepted:
        verdict.update(file=stored.name, onnxruntime=sessions.onnxruntime_version())
    else:
        stored.unlink(missing_ok=True)
    return verdict


def store_first_token_graph(artifact_dir: Path) -> str | None:
    """Give an artifact exported before first-token graphs were stored the graph its accepted verdict
    was given on (the rewrite is deterministic), named in its aiaas.json; the stored file's name, or
    None where there is nothing to store (no accepted verdict, already stored, no head to narrow)."""
    meta_path = Path(artifact_dir) / rt.META_FILE
    meta = json.loads(meta_path.read_text())
    runtime = meta.get("runtime") or {}
    precision = runtime.get("precision")
    if not isinstance(precision, str) or not rt.first_token_accepted(runtime, precision):
        return None
    if sessions.stored_first_token_file(runtime, precision) is not None:
        return None  # stored, by this ONNX Runtime
    stored = sessions.write_first_token_graph(Path(artifact_dir) / runtime["files"][precision])
    if stored is None:
        return None
    runtime["first_token"][precision].update(file=stored.name, onnxruntime=sessions.onnxruntime_version())
    meta_path.write_text(json.dumps(meta, indent=2))
    return stored.name


def served_outputs(predictor: rt.Predictor, texts: list[str]) -> np.ndarray:
    """What clients would receive: probabilities/values, or embeddings for a headless model."""
    if predictor.task == EMBEDDING:
        return predictor.embed(texts)
    return predictor.predict(texts)


def _served_by(predictors: dict[str, rt.Predictor]) -> dict:
    return {name: (lambda texts, p=p: served_outputs(p, texts)) for name, p in predictors.items()}


def one_thread_predictor(
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
