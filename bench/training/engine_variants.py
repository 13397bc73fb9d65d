"""Do the engine's speed choices cost accuracy? Seed-repeated, through the real engine.

    python -m bench.training.engine_variants [--train 1000] [--seeds 0 1 2] [--variants ...]
    python -m bench.training.engine_variants --train 500 --validation 500 --seeds 42 43 44 --variants unfrozen fp32

`aiaas.training.train` on the bench's split (the same stratified subset as bench.training.run,
seed 0) with its defaults, and with one speed choice turned back at a time:

    default        the engine's defaults (on CPU: word embeddings frozen, bf16 where native, fused AdamW,
                   lr 2e-4, batch 16 below 2,000 examples)
    unfrozen       TrainConfig(freeze_embeddings=False): the word-embedding matrix trained too
    fp32           TrainConfig(precision="fp32"): no bf16 autocast
    lr-5e-5        TrainConfig(learning_rate=5e-5): the Trainer's default learning rate
    batch-8        TrainConfig(batch_size=8): the Trainer's default batch size
    freeze-k       TrainConfig(freeze_layers=k), k in 0, 2, 3, 4: the embeddings and the lower k encoder
                   layers frozen and their output cached (aiaas.training.frozen_prefix); freeze-0 is the
                   engine before it (what "auto" was measured against)
    freeze-2-uncached  freeze_layers=2 with the cache switched off (frozen_prefix.CACHE_LIMIT_BYTES = 0): the
                   frozen layers run forward each step, dropout on, as plain freezing does; tells what the
                   cache's dropout-free states cost apart from the freezing itself

each with several training seeds (TrainConfig.seed: the new head's init and the batch order; the
split stays fixed). Runs go seed by seed, every variant once per seed, so a run cut short is
still balanced. Reports per variant mean ± std (sample) of validation and test accuracy and
samples/s, and the per-seed values; stored under "engine_variants" in
bench/results/training.json (bench.training.run keeps that entry when it rewrites the file).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.training.common import ROOT, SilentCallbacks, accuracy_and_f1, loadavg, predict_dynamic
from bench.training.run import _split

RESULTS = ROOT / "bench" / "results" / "training.json"
README = ROOT / "bench" / "README.md"
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "unfrozen": {"freeze_embeddings": False},
    "fp32": {"precision": "fp32"},
    "lr-5e-5": {"learning_rate": 5e-5},
    "batch-8": {"batch_size": 8},
    **{f"freeze-{k}": {"freeze_layers": k} for k in (0, 2, 3, 4)},
    "freeze-2-uncached": {"freeze_layers": 2},
}
# Module constants a variant changes for its run (and puts back).
PATCHES: dict[str, dict[str, Any]] = {"freeze-2-uncached": {"CACHE_LIMIT_BYTES": 0}}


def run_variant(variant: str, split, epochs: int, seed: int) -> dict:
    from unittest import mock

    from aiaas.training import TrainConfig, frozen_prefix, train

    data = split.prepared()
    config = TrainConfig(base_model="minilm-l6", n_epochs=epochs, seed=seed, **VARIANTS[variant])
    patches = PATCHES.get(variant)
    patched = mock.patch.multiple(frozen_prefix, **patches) if patches else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as work_dir, patched:
        t0 = time.perf_counter()
        result = train(config, data, Path(work_dir), SilentCallbacks())
        train_s = time.perf_counter() - t0
        index = {label: i for i, label in enumerate(split.labels)}
        pred = predict_dynamic(result.model_dir, [t for t, _ in split.test])
    test_acc, _ = accuracy_and_f1(pred, np.array([index[y] for _, y in split.test]), len(split.labels))
    windows = [r["samples_per_second"] for r in result.history if r.get("split") == "train"]
    hp = result.hyperparameters
    return {
        "seed": seed,
        "samples_per_s": round(len(data.train) * result.epochs_completed / train_s, 2),
        "step_samples_per_s_median": round(float(np.median(windows)), 2) if windows else None,
        "val_accuracy": round(float(result.metrics["accuracy"]), 4),
        "test_accuracy": round(test_acc, 4),
        "epochs_completed": result.epochs_completed,
        "precision": hp["precision"],
        "batch_size": hp["batch_size"],
        "learning_rate": hp["learning_rate"],
        "freeze_layers": hp.get("freeze_layers", 0),
        "train_s": round(train_s, 1),
        "loadavg_after": loadavg(),
    }


def summarize(runs: list[dict]) -> dict:
    """Mean ± sample std over seeds of each figure (std 0 with one seed)."""
    out: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
    for key in ("val_accuracy", "test_accuracy", "samples_per_s"):
        values = [float(r[key]) for r in runs]
        scale = 100 if "accuracy" in key else 1
        out[key] = {
            "mean": round(scale * statistics.fmean(values), 2),
            "std": round(scale * statistics.stdev(values), 2) if len(values) > 1 else 0.0,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--validation", type=int, default=1000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--partial", type=Path, help="also write the runs so far here after each run")
    parser.add_argument("--no-store", action="store_true", help="leave training.json alone (with --partial)")
    parser.add_argument("--key", default="engine_variants", help="the entry of training.json to write")
    args = parser.parse_args()
    split = _split(args.train, args.validation, args.test)
    out: dict[str, Any] = {
        "train": args.train,
        "validation": len(split.validation),
        "test": len(split.test),
        "epochs": args.epochs,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_start": loadavg(),
        "overrides": {k: VARIANTS[k] for k in args.variants},
        "runs": {v: [] for v in args.variants},
    }
    for seed in args.seeds:
        for variant in args.variants:
            out["runs"][variant].append(run_variant(variant, split, args.epochs, seed))
            print(variant, json.dumps(out["runs"][variant][-1]), flush=True)
            out["summary"] = {v: summarize(r) for v, r in out["runs"].items() if r}
            if args.partial:
                args.partial.write_text(json.dumps(out, indent=2) + "\n")
    out["loadavg_end"] = loadavg()
    if args.partial:
        args.partial.write_text(json.dumps(out, indent=2) + "\n")
    if not args.no_store:
        store(out, args.key)


def store(out: dict, key: str = "engine_variants") -> None:
    """Put the comparison into training.json (keeping the rest) and refresh the README section."""
    report = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    report[key] = out
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    # "rounds_detail": written by this version of bench.training.run
    if key == "engine_variants" and "rounds_detail" in report:
        from bench.training.common import replace_section
        from bench.training.report import readme_section

        replace_section(README, "Training", readme_section(report))


if __name__ == "__main__":
    main()
