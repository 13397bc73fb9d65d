"""aiaas's engine with its defaults: `aiaas.training.train(TrainConfig(base_model, n_epochs))`.

Everything else is the engine's choice (batch size, learning rate, warmup, dynamic
padding with length-grouped batches, precision, threads, evaluation and checkpoints
each epoch). Run in its own process by bench.training.run:

    python -m bench.training.aiaas_worker SPLIT.json OUT.json --epochs 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.training.common import (
    SilentCallbacks,
    Split,
    WorkerResult,
    accuracy_and_f1,
    cpu_seconds,
    loadavg,
    predict_dynamic,
)



def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser()
    parser.add_argument("split", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--seed", type=int, default=42, help="TrainConfig.seed (42 is the engine's default)")
    args = parser.parse_args()

    from aiaas.training import TrainConfig, train

    # Import the libraries before the clock starts, as hf_worker does (it imports torch and
    # transformers and builds its model first): ~3.8 s of imports would otherwise be charged to
    # the training call on one side only. Loading the weights stays inside aiaas's timed call.
    import torch  # noqa: F401
    import transformers.models.bert.modeling_bert  # noqa: F401
    import transformers.models.bert.tokenization_bert  # noqa: F401
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401

    split = Split.from_file(args.split)
    data = split.prepared()
    with tempfile.TemporaryDirectory(prefix="aiaas-engine-") as work_dir:
        load = [loadavg()]
        t0 = time.perf_counter()
        result = train(
            TrainConfig(base_model=args.model, n_epochs=args.epochs, seed=args.seed),
            data,
            Path(work_dir),
            SilentCallbacks(),
        )
        train_s = time.perf_counter() - t0
        load.append(loadavg())
        index = {label: i for i, label in enumerate(split.labels)}
        test_pred = predict_dynamic(result.model_dir, [t for t, _ in split.test])
        val_pred = predict_dynamic(result.model_dir, [t for t, _ in split.validation])
        best_step = json.loads((result.model_dir / "aiaas.json").read_text())["metrics"].get("best_step")
    test_acc, _ = accuracy_and_f1(test_pred, np.array([index[y] for _, y in split.test]), len(split.labels))
    hp = result.hyperparameters
    windows = [r["samples_per_second"] for r in result.history if r.get("split") == "train"]
    out = WorkerResult(
        config="aiaas",
        settings={
            "padding": "dynamic, length-grouped batches",
            "precision": hp["precision"],
            "batch_size": hp["batch_size"],
            "learning_rate": hp["learning_rate"],
            "warmup_steps": hp["warmup_steps"],
            "weight_decay": hp["weight_decay"],
            "seed": args.seed,
            "freeze_embeddings": hp.get("freeze_embeddings"),
            "freeze_layers": hp.get("freeze_layers", 0),
            "fused_optimizer": hp.get("fused_optimizer"),
            "epochs": args.epochs,
            "epochs_completed": result.epochs_completed,
            "optimizer_steps": result.steps,
            "torch_threads": hp["num_threads"],
            "best_step": best_step,
            "reasons": hp.get("reasons"),
        },
        samples_trained=float(len(data.train) * result.epochs_completed),
        train_s=train_s,
        wall_s=time.perf_counter() - started,
        val_accuracy=float(result.metrics["accuracy"]),
        test_accuracy=test_acc,
        val_macro_f1=float(result.metrics["macro_f1"]),
        step_samples_per_s=windows,
        cpu_s=cpu_seconds(),
        loadavg=load,
        val_pred=val_pred.tolist(),
        test_pred=test_pred.tolist(),
    )
    args.out.write_text(json.dumps(out.__dict__))


if __name__ == "__main__":
    main()
