"""The quality benchmark of issue #5: what `auto` gives on real labelled data, and how fast.

    python -m bench.quality.run            # what `make bench-quality` runs (<= ~15 min on 2 cores)
    python -m bench.quality.run --quick    # 600 texts per set, 60 s budgets; writes nothing

For each data set (bench/quality/datasets.py: English movie-review sentences, English
tweets, Chinese shopping reviews), a stratified split (seed 0) into 70% train, 10%
validation and 20% test, then `train_family("auto", TrainConfig(base_model="minilm-l6"))`
with every training setting at its default and a per-set time budget. The test split
is used only here, after training: the accuracy and macro-F1 of the model auto chose,
and of the other candidate when it was trained. Sets larger than --limit texts are
subsampled (stratified) so that the whole run fits in about 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality.datasets import LOADERS, stratified_split
from bench.training.common import ROOT, accuracy_and_f1, machine, predict_dynamic, replace_section

RESULTS = ROOT / "bench" / "results" / "quality.json"
README = ROOT / "bench" / "README.md"
FRACTIONS = (0.7, 0.1, 0.2)
# Texts kept per set (stratified subsample) and auto's time budget per set: together they
# keep `make bench-quality` near 15 minutes on a 2-core machine.
LIMITS = {"mr-sentences": 4000, "tweets": 5000, "zh-shopping": 5000}
BUDGET_S = 240.0

log = logging.getLogger("bench.quality")


class _Log:
    """TrainCallbacks that log the messages worth seeing while the benchmark runs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []

    def event(self, level: str, message: str, *, type: str = "message", data: dict | None = None) -> None:
        self.events.append({"level": level, "message": message, "type": type})
        if type != "metrics" or "accuracy" in (data or {}):
            log.info("%s: %s", self.name, message)

    def checkpoint(self, step: int, path: Path, metrics: dict) -> None:
        pass

    def should_stop(self) -> bool:
        return False


def _evaluate(family: str, model_dir: Path, texts: list[str], truth: np.ndarray, labels: list[str]) -> dict:
    started = time.perf_counter()
    if family == "tfidf-linear":
        from aiaas.training.classical import ClassicalModel

        pred = ClassicalModel.load(model_dir).predict(texts).argmax(axis=1)
    else:
        pred = predict_dynamic(model_dir, texts)
    acc, f1 = accuracy_and_f1(pred, truth, len(labels))
    return {
        "accuracy": round(acc, 4),
        "macro_f1": round(f1, 4),
        "predict_s": round(time.perf_counter() - started, 1),
    }


def run_one(name: str, limit: int, budget: float, work_root: Path) -> dict:
    from aiaas.data.types import Example, PreparedData
    from aiaas.training import TrainConfig
    from aiaas.training.families import train_family

    ds = LOADERS[name]()
    tr, va, te = stratified_split(ds.labels, FRACTIONS, seed=0, limit=limit)
    labels = sorted(set(ds.labels))
    data = PreparedData(
        task="single_label_classification",
        train=[Example(ds.texts[i], ds.labels[i]) for i in tr],
        validation=[Example(ds.texts[i], ds.labels[i]) for i in va],
        labels=labels,
        report={},
        cleaning={},
    )
    callbacks = _Log(name)
    work_dir = work_root / name
    started = time.perf_counter()
    result = train_family(
        "auto", TrainConfig(base_model="minilm-l6"), data, work_dir, callbacks, time_budget_s=budget
    )
    wall = time.perf_counter() - started
    selection = result.selection or {}
    test_texts = [ds.texts[i] for i in te]
    truth = np.array([labels.index(ds.labels[i]) for i in te])
    test: dict[str, dict] = {}
    for family, candidate in selection.get("candidates", {}).items():
        if candidate.get("status") == "trained":
            test[family] = _evaluate(family, work_dir / family / "model", test_texts, truth, labels)
    chosen = result.family
    out = {
        "language": ds.language,
        "source": ds.source,
        "note": ds.note,
        "texts_available": len(ds.texts),
        "texts_used": len(tr) + len(va) + len(te),
        "subsampled": len(tr) + len(va) + len(te) < len(ds.texts),
        "split": {"train": len(tr), "validation": len(va), "test": len(te)},
        "label_counts": ds.label_counts(),
        "majority_baseline": round(max(np.bincount(truth)) / len(truth), 4),
        "family_chosen": chosen,
        "accuracy": test[chosen]["accuracy"],
        "macro_f1": test[chosen]["macro_f1"],
        "wall_s": round(wall, 1),
        "time_budget_s": budget,
        "selection_reason": selection.get("reason"),
        "validation": {
            fam: {k: c.get(k) for k in ("status", "accuracy", "macro_f1", "seconds", "reason") if k in c}
            for fam, c in selection.get("candidates", {}).items()
        },
        "test": test,
        "transformer_plan": {
            k: v
            for k, v in (selection.get("transformer_plan") or {}).items()
            if k
            in (
                "run",
                "reason",
                "n_epochs",
                "planned_epochs",
                "epoch_seconds",
                "fixed_seconds",
                "precision",
                "batch_size",
                "full_run_seconds",
                "left_seconds",
            )
        },
    }
    log.info(
        "%s: %s", name, json.dumps({k: out[k] for k in ("family_chosen", "accuracy", "macro_f1", "wall_s")})
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", nargs="*", default=list(LOADERS))
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="auto's time budget per set, seconds")
    parser.add_argument(
        "--quick", action="store_true", help="600 texts per set, 60 s budgets; writes nothing"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    facts = machine()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        for name in args.sets:
            limit = 600 if args.quick else LIMITS[name]
            results[name] = run_one(name, limit, 60.0 if args.quick else args.budget, Path(tmp))
    report = {
        "what": "auto (tfidf-linear first, then MiniLM-L6 within the time budget, the better on validation "
        "kept) with default settings; accuracy and macro-F1 on a held-out test split",
        "split": dict(zip(("train", "validation", "test"), FRACTIONS, strict=True)),
        "seed": 0,
        "machine": facts,
        "datasets": results,
        "anchors": {
            "mr-sentences": {
                "source": "Kim 2014, Convolutional Neural Networks for Sentence Classification, table 2 (MR, "
                "10,662 sentences, 10-fold CV)",
                "CNN-non-static": 81.5,
                "CNN-static": 81.0,
                "NBSVM": 79.4,
                "MNB": 79.0,
            }
        },
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    print(
        json.dumps(
            {
                n: {k: r[k] for k in ("family_chosen", "accuracy", "macro_f1", "wall_s")}
                for n, r in results.items()
            },
            indent=2,
        )
    )
    if args.quick:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    from bench.quality.report import readme_section

    replace_section(README, "Quality", readme_section(report))


if __name__ == "__main__":
    main()
