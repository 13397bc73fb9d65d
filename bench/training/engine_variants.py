"""The two engine changes bench.training.profile times, run through the real engine for accuracy.

    python -m bench.training.engine_variants [--train 1000]

`aiaas.training.train` on the bench's split without either change (baseline: AdamW unfused, the
word-embedding matrix trained), with torch.optim.AdamW(fused=True), with the word-embedding
matrix frozen (TrainConfig.freeze_embeddings), and with both (the engine's defaults on CPU since
they were measured here). Unfused AdamW is patched in from outside the engine. Reports
samples/s and validation/test accuracy per variant, and stores them under "engine_variants"
in bench/results/training.json (bench.training.run keeps that entry when it rewrites the file),
then refreshes the "## Training" section of bench/README.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.training.aiaas_worker import _Quiet
from bench.training.common import ROOT, accuracy_and_f1, loadavg, predict_dynamic
from bench.training.run import _split

RESULTS = ROOT / "bench" / "results" / "training.json"
README = ROOT / "bench" / "README.md"
VARIANTS = ("baseline", "fused", "frozen-emb", "fused+frozen-emb")


def run_variant(variant: str, split, epochs: int) -> dict:
    from aiaas.training import TrainConfig, components, train

    optimizer = components.optimizer
    if "fused" not in variant:
        components.optimizer = functools.partial(optimizer, fused=False)
    data = split.prepared()
    try:
        with tempfile.TemporaryDirectory() as work_dir:
            t0 = time.perf_counter()
            result = train(
                TrainConfig(base_model="minilm-l6", n_epochs=epochs, freeze_embeddings="frozen" in variant),
                data,
                Path(work_dir),
                _Quiet(),
            )
            train_s = time.perf_counter() - t0
            index = {label: i for i, label in enumerate(split.labels)}
            pred = predict_dynamic(result.model_dir, [t for t, _ in split.test])
    finally:
        components.optimizer = optimizer
    test_acc, _ = accuracy_and_f1(pred, np.array([index[y] for _, y in split.test]), len(split.labels))
    windows = [r["samples_per_second"] for r in result.history if r.get("split") == "train"]
    return {
        "samples_per_s": round(len(data.train) * result.epochs_completed / train_s, 2),
        "step_samples_per_s_median": round(float(np.median(windows)), 2),
        "val_accuracy": round(float(result.metrics["accuracy"]), 4),
        "test_accuracy": round(test_acc, 4),
        "train_s": round(train_s, 1),
        "loadavg_after": loadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    split = _split(args.train, 1000, 1000)
    out = {
        "train": args.train,
        "epochs": args.epochs,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "variants": {},
    }
    for variant in VARIANTS:
        out["variants"][variant] = run_variant(variant, split, args.epochs)
        print(variant, json.dumps(out["variants"][variant]), flush=True)
    report = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    report["engine_variants"] = out
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    if "configs" in report:
        from bench.training.common import replace_section
        from bench.training.report import readme_section

        replace_section(README, "Training", readme_section(report))


if __name__ == "__main__":
    main()
