"""The small-data transformer recipe (issue #17 item 4): a seed-repeated A/B of each technique.

    python -m bench.quality.recipe                       # mr-sentences and tweets, seeds 0-2, every arm
    python -m bench.quality.recipe --seeds 0 --arms baseline llrd

From each set (bench/quality/datasets.py) one stratified split (seed 0, the same for every arm and
seed): 500 training rows, 200 for validation (the best epoch's weights are kept), 500 for test.
MiniLM-L6 is fine-tuned with max_length 64, 2 epochs (64 steps; see EPOCHS) and every other
setting at its default, once per arm and training seed:

    baseline   the defaults (lr 2e-4 for a small model, warm-up then linear decay, the best epoch
               on the selection metric restored: what train() does)
    llrd       layerwise_lr_decay 0.8: each layer below the top at 0.8x the one above
    reinit     reinit_pooler + reinit_layers 1: the pooler and the top encoder layer drawn afresh
    epochs     twice the epochs, under early stopping (patience 2); only with --arms epochs

The test split is scored only afterwards (accuracy, macro-F1). Differences are paired by seed: a
technique counts as a gain only when its mean paired difference in both accuracy and macro-F1 is
positive, every seed's difference is positive, and the mean exceeds the baseline's seed standard
deviation, on every set. Results are written after every run (bench/results/quality_recipe.json;
runs already there are kept, so an interrupted bench resumes) and the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality.datasets import LOADERS, stratified_split
from bench.training.common import ROOT, SilentCallbacks, accuracy_and_f1, loadavg, machine, replace_section

RESULTS = ROOT / "bench" / "results" / "quality_recipe.json"
README = ROOT / "bench" / "README.md"
SETS = ("mr-sentences", "tweets")
ROWS = (500, 200, 500)  # train, validation, test
# Every arm trains this many epochs (64 steps of 16): "auto" would give ~150 steps, ~7 min a run on the
# 2 loaded cores this ran on, too long for 3 seeds x 3 arms x 2 sets in the time there was.
EPOCHS = 2
MAX_LENGTH = 64
ARMS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "llrd": {"layerwise_lr_decay": 0.8},
    "reinit": {"reinit_pooler": True, "reinit_layers": 1},
    "epochs": {"n_epochs": "2x"},  # not in the default run (twice the cost): --arms epochs
}
DEFAULT_ARMS = ("baseline", "llrd", "reinit")
SECTION = "Transformer recipe for small data (issue #17 item 4)"

log = logging.getLogger("bench.quality.recipe")


class _Quiet(SilentCallbacks):
    def event(self, level: str, message: str, *, type: str = "message", data: dict | None = None) -> None:
        if type == "metrics" and "accuracy" in (data or {}) or message.startswith(("Early", "Fine-tuning")):
            log.info("  %s", message[:200])


def split(name: str) -> tuple[Any, list[str], np.ndarray, list[str]]:
    """(PreparedData, test texts, test truth, labels): one split for every arm and seed."""
    from aiaas.data.types import Example, PreparedData

    ds = LOADERS[name]()
    total = sum(ROWS)
    tr, va, te = stratified_split(ds.labels, tuple(r / total for r in ROWS), seed=0, limit=total)
    labels = sorted(set(ds.labels))
    data = PreparedData(
        task="single_label_classification",
        train=[Example(ds.texts[i], ds.labels[i]) for i in tr],
        validation=[Example(ds.texts[i], ds.labels[i]) for i in va],
        labels=labels, report={}, cleaning={},
    )  # fmt: skip
    truth = np.array([labels.index(ds.labels[i]) for i in te])
    return data, [ds.texts[i] for i in te], truth, labels


def arm_options(arm: str, n_train: int) -> dict[str, Any]:
    options = {"n_epochs": EPOCHS, **ARMS[arm]}
    if options["n_epochs"] == "2x":
        options["n_epochs"] = 2 * EPOCHS
    return options


def run_one(data: Any, texts: list[str], truth: np.ndarray, labels: list[str], arm: str, seed: int,
            root: Path) -> dict[str, Any]:  # fmt: skip
    from aiaas.training import TrainConfig, train
    from aiaas.training.ensemble import validation_probs

    options = arm_options(arm, len(data.train))
    config = TrainConfig(base_model="minilm-l6", seed=seed, max_length=MAX_LENGTH, **options)
    started = time.perf_counter()
    result = train(config, data, root / f"{arm}-{seed}", _Quiet())
    wall = time.perf_counter() - started
    pred = validation_probs(result.model_dir, "transformer", texts).argmax(axis=1)
    acc, f1 = accuracy_and_f1(pred, truth, len(labels))
    hp = result.hyperparameters
    return {
        "options": options,
        "accuracy": round(100 * acc, 2),
        "macro_f1": round(100 * f1, 2),
        "validation": {k: round(100 * float(result.metrics[k]), 2) for k in ("accuracy", "macro_f1")},
        "n_epochs": hp["n_epochs"],
        "epochs_completed": round(result.epochs_completed, 2),
        "best_step": result.metrics.get("best_step", None) or _best_step(result.history),
        "steps": result.steps,
        "train_s": round(wall, 1),
        "loadavg": loadavg(),
    }


def _best_step(history: list[dict]) -> int | None:
    evals = [h for h in history if h.get("split") == "validation" and "macro_f1" in h]
    return max(evals, key=lambda h: (h["macro_f1"], h.get("accuracy", 0)))["step"] if evals else None


def summarise(runs: dict[str, dict[str, dict[str, Any]]], seeds: list[int]) -> dict[str, Any]:
    """Per arm: mean and seed std of each metric; paired (same seed) differences against the baseline."""
    out: dict[str, Any] = {}
    base = runs.get("baseline", {})
    for arm in [a for a in ARMS if a in runs]:
        by_seed = runs[arm]
        done = [s for s in seeds if str(s) in by_seed]
        row: dict[str, Any] = {"seeds": done}
        for metric in ("accuracy", "macro_f1"):
            values = [by_seed[str(s)][metric] for s in done]
            row[metric] = {"mean": _r(statistics.fmean(values)) if values else None,
                           "std": _r(statistics.stdev(values)) if len(values) > 1 else None}  # fmt: skip
            pairs = [s for s in done if str(s) in base]
            paired = [by_seed[str(s)][metric] - base[str(s)][metric] for s in pairs]
            if arm != "baseline" and paired:
                row[metric]["paired_diff"] = [_r(d) for d in paired]
                row[metric]["diff_mean"] = _r(statistics.fmean(paired))
                noise = [base[str(s)][metric] for s in pairs]  # the baseline's spread on the same seeds
                row[metric]["baseline_std"] = _r(statistics.stdev(noise)) if len(noise) > 1 else None
        if arm != "baseline":
            row["gain_beyond_noise"] = all(_beyond_noise(row[m]) for m in ("accuracy", "macro_f1"))
        row["train_s_mean"] = _r(statistics.fmean(by_seed[str(s)]["train_s"] for s in done)) if done else None
        out[arm] = row
    return out


def _beyond_noise(arm: dict[str, Any]) -> bool:
    diffs, noise = arm.get("paired_diff") or [], arm.get("baseline_std")
    return bool(diffs) and len(diffs) >= 2 and all(d > 0 for d in diffs) and noise is not None \
        and arm["diff_mean"] > noise


def _r(x: float) -> float:
    return round(float(x), 2)


def readme_table(report: dict[str, Any]) -> str:
    lines = [
        f"MiniLM-L6, {ROWS[0]} training rows, {ROWS[1]} validation, {ROWS[2]} test (one stratified split per "
        f"set), max_length {MAX_LENGTH}, {EPOCHS} epochs, seeds {report['seeds']}; test accuracy / macro-F1 "
        "in %, mean ± seed std; Δ = mean paired (same seed) difference against the baseline. "
        f"CPU: {report['machine'].get('cpu_model')}; "
        f"load average during the runs {report['loadavg_range']}. `python -m bench.quality.recipe`, "
        "bench/results/quality_recipe.json.",
        "",
        "A technique counts as a gain only when, on every set, its paired difference is positive on every "
        "seed and its mean exceeds the baseline's seed standard deviation, in both accuracy and macro-F1 "
        "(`bench.quality.recipe.summarise`). Train seconds follow the machine's load (other engineers' work "
        "on the same 2 cores), not the arm.",
        "",
        "| set | arm | options | seeds | accuracy | macro-F1 | Δ acc | Δ F1 | per-seed Δ F1 | beyond noise "
        "(this set) | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, d in report["datasets"].items():
        for arm, row in d["summary"].items():
            a, f = row["accuracy"], row["macro_f1"]
            opts = next(iter(d["runs"][arm].values()))["options"] if d["runs"][arm] else {}
            lines.append("| " + " | ".join([
                name, arm, ", ".join(f"{k} {v}" for k, v in opts.items()) or "defaults",
                ",".join(map(str, row["seeds"])), _ms(a), _ms(f),
                _signed(a.get("diff_mean")), _signed(f.get("diff_mean")),
                " ".join(_signed(x) for x in f.get("paired_diff", [])) or "—",
                {True: "yes", False: "no"}.get(row.get("gain_beyond_noise"), "—"),  # type: ignore[arg-type]
                str(row["train_s_mean"]),
            ]) + " |")  # fmt: skip
    lines += ["", report["verdict"]]
    return "\n".join(lines)


def _ms(m: dict[str, Any]) -> str:
    if m["mean"] is None:
        return "—"
    return f"{m['mean']:.2f}" + (f" ± {m['std']:.2f}" if m["std"] is not None else "")


def _signed(x: float | None) -> str:
    return "—" if x is None else f"{x:+.2f}"


def verdict(report: dict[str, Any]) -> str:
    sets = report["datasets"].values()
    arms = [a for a in ARMS if a != "baseline" and any(a in d["summary"] for d in sets)]
    kept = [a for a in arms if all(d["summary"].get(a, {}).get("gain_beyond_noise") for d in sets)]
    if kept:
        return f"Gain beyond seed noise on every set: {', '.join(kept)}; made the default."
    return ("No technique gained beyond seed noise on every set: all stay options, off by default "
            "(`layerwise_lr_decay`, `reinit_layers`, `reinit_pooler`; more epochs through `n_epochs`).")


def write_readme(report: dict[str, Any]) -> None:
    replace_section(README, SECTION, readme_table(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=list(ARMS))
    parser.add_argument("--results", type=Path, default=RESULTS, help="a part run apart (--merge)")
    parser.add_argument("--merge", type=Path, nargs="*", default=[], help="add these files' runs; stop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    report = json.loads(args.results.read_text()) if args.results.exists() else {"datasets": {}}
    if args.merge:
        for path in args.merge:
            part = json.loads(path.read_text())
            for name, d in part["datasets"].items():
                mine = report["datasets"].setdefault(name, {**d, "runs": {}})
                for arm, by_seed in d["runs"].items():
                    mine["runs"].setdefault(arm, {}).update(by_seed)
            report["seeds"] = sorted(set(report.get("seeds", [])) | set(part.get("seeds", [])))
            report["loadavg_samples"] = report.get("loadavg_samples", []) + part.get("loadavg_samples", [])
        _save(report, args.results)
        return
    report.update(machine=machine(), seeds=sorted(set(report.get("seeds", [])) | set(args.seeds)))
    splits = {name: split(name) for name in args.sets}
    with tempfile.TemporaryDirectory(prefix="bench-quality-recipe-") as tmp:
        for seed in args.seeds:  # every arm of a seed before the next seed: partial results still pair
            for name in args.sets:
                data, texts, truth, labels = splits[name]
                d = report["datasets"].setdefault(name, {"rows": list(ROWS), "labels": labels, "runs": {}})
                for arm in args.arms:
                    if str(seed) in d["runs"].get(arm, {}):
                        continue
                    log.info("%s seed %d %s", name, seed, arm)
                    run = run_one(data, texts, truth, labels, arm, seed, Path(tmp) / name)
                    log.info("%s seed %d %s: %s", name, seed, arm, json.dumps(run))
                    d["runs"].setdefault(arm, {})[str(seed)] = run
                    report["loadavg_samples"] = report.get("loadavg_samples", []) + [run["loadavg"][0]]
                    _save(report, args.results)


def _save(report: dict[str, Any], path: Path) -> None:
    """Summaries and verdict from the runs so far; the README table only for the bench's own results file."""
    for d in report["datasets"].values():
        d["summary"] = summarise(d["runs"], report["seeds"])
    loads = report.get("loadavg_samples") or [0.0]
    report["loadavg_range"] = f"{min(loads):.1f}-{max(loads):.1f}"
    report["verdict"] = verdict(report)
    path.write_text(json.dumps(report, indent=2) + "\n")
    if path.resolve() == RESULTS.resolve():
        write_readme(report)

if __name__ == "__main__":
    main()
