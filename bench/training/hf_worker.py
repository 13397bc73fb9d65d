"""The baselines: Hugging Face `Trainer`.

Default (`hf_trainer`): its defaults, data prepared the way its text classification
examples do (`padding="max_length"`, max_length 128, as run_glue.py's defaults), fp32.
Only what has no default is set: the epochs, the output directory, no integrations.

Tuned (`--tuned`, `hf_trainer_tuned`): the Trainer's best flags for this model on this
CPU: dynamic padding (texts tokenized unpadded, `DataCollatorWithPadding` pads each batch
to its longest), batches grouped by length (`group_by_length=True`, called
`train_sampling_strategy="group_by_length"` in newer transformers), `bf16=True` only where
the CPU computes bf16 natively (AMX or AVX-512 BF16 in /proc/cpuinfo; emulated bf16 is
slower than fp32), `optim="adamw_torch_fused"`, and the batch size, warmup steps and weight decay
given (bench.training.run passes aiaas's resolved ones; the schedule is linear decay after the warmup
in both, gradients clipped to norm 1 in both, max_length 128 in both) and aiaas's learning rate
(`--learning-rate`; without it the Trainer's 5e-5: the same learning rate on both sides. The 500-sentence
run that seemed to leave MiniLM at chance at 5e-5 read its predictions in the wrong order, below). `--seed` sets the Trainer's seed (default 42, its own).

Predictions are read back in the dataset's order (`predict_in_order`): with length grouping on, this Trainer
also predicts through a shuffled length-grouped sampler, so `predict().predictions` come in that sampler's
order; read as if in the dataset's order they scored chance (49.5-51%) in the first quiet run of issue #18 while
the model had learned (bench/README.md, "Training: the tuned Trainer at chance"). Run in its own process
by bench.training.run:

    python -m bench.training.hf_worker SPLIT.json OUT.json --epochs 3 --model DIR
    python -m bench.training.hf_worker SPLIT.json OUT.json --epochs 3 --model DIR --tuned --batch-size 16 \
        --warmup-steps 19 --weight-decay 0.01 --seed 43
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.training.common import Split, WorkerResult, accuracy_and_f1, cpu_seconds, loadavg

MAX_LENGTH = 128
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes bf16 in hardware (AMX or AVX-512 BF16)."""
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    found = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    return bool(found) and any(flag in found.group(1).split() for flag in NATIVE_BF16_FLAGS)


def tuned_arguments(
    training_arguments: type, batch_size: int, bf16: bool, warmup_steps: int = 0, weight_decay: float = 0.0,
    learning_rate: float | None = None,
) -> dict:
    """TrainingArguments for the tuned baseline; length grouping is spelled per transformers version."""
    names = {f.name for f in dataclasses.fields(training_arguments)}
    grouping = (
        {"group_by_length": True}
        if "group_by_length" in names
        else {"train_sampling_strategy": "group_by_length"}
    )
    return {
        "per_device_train_batch_size": batch_size,
        "bf16": bf16,
        "use_cpu": bf16,  # newer transformers refuses bf16 without a GPU unless told it is on CPU
        "optim": "adamw_torch_fused",
        "warmup_steps": warmup_steps,
        "weight_decay": weight_decay,
        # ours, when given: the same learning rate on both sides (without it, the Trainer's 5e-5)
        **({"learning_rate": learning_rate} if learning_rate is not None else {}),
        **grouping,
    }


def encoded(tokenizer: Any, rows: list[tuple[str, str]], index: dict[str, int], *, dynamic: bool) -> Any:
    """(text, label) rows as the Trainer's dataset. Dynamic: unpadded, `DataCollatorWithPadding` pads each batch
    (the tuned baseline); else padded to MAX_LENGTH as tensors (the defaults, as run_glue.py prepares them)."""
    import torch

    class Encoded(torch.utils.data.Dataset):
        def __init__(self) -> None:
            padding = False if dynamic else "max_length"
            self.enc = tokenizer([t for t, _ in rows], padding=padding, truncation=True, max_length=MAX_LENGTH)
            self.labels = [index[label] for _, label in rows]

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int) -> dict:
            if dynamic:
                return {**{k: v[i] for k, v in self.enc.items()}, "labels": self.labels[i]}
            item = {k: torch.tensor(v[i]) for k, v in self.enc.items()}
            item["labels"] = torch.tensor(self.labels[i])
            return item

    return Encoded()


def predict_in_order(trainer: Any, dataset: Any, labels: list[int]) -> np.ndarray:
    """`trainer.predict(dataset)`'s predictions, row i for dataset[i] (whose label is labels[i]).

    With `train_sampling_strategy="group_by_length"` (`group_by_length=True` before transformers 5) the Trainer
    predicts through the same kind of sampler it trains with (`Trainer._get_eval_sampler`: a LengthGroupedSampler,
    shuffled, seeded with args.data_seed or args.seed afresh on each call), and returns predictions and label_ids
    in that order. A fresh sampler gives that order again; the label_ids, put back the same way, must then equal
    `labels`, or this raises rather than score predictions against the wrong rows."""
    output = trainer.predict(dataset)
    sampler = trainer._get_eval_sampler(dataset)
    order = np.arange(len(dataset)) if sampler is None else np.fromiter(iter(sampler), dtype=np.int64)
    predictions, label_ids = np.asarray(output.predictions), np.asarray(output.label_ids)
    if len(order) != len(predictions) or sorted(order.tolist()) != list(range(len(dataset))):
        raise RuntimeError(f"the eval sampler's order is not a permutation of the {len(dataset)} rows")
    in_order, put_back = np.empty_like(predictions), np.empty_like(label_ids)
    in_order[order], put_back[order] = predictions, label_ids
    if not np.array_equal(put_back, np.asarray(labels)):
        raise RuntimeError("predictions could not be put back in the dataset's order: label_ids do not match")
    return in_order


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser()
    parser.add_argument("split", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--model", required=True)
    parser.add_argument("--tuned", action="store_true", help="the Trainer's best flags (module docstring)")
    parser.add_argument("--batch-size", type=int, default=16, help="with --tuned")
    parser.add_argument("--warmup-steps", type=int, default=0, help="with --tuned")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="with --tuned")
    parser.add_argument("--learning-rate", type=float, default=None, help="with --tuned (default: the Trainer's)")
    parser.add_argument("--seed", type=int, default=42, help="the Trainer's seed (42 is its default)")
    args = parser.parse_args()

    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    set_seed(args.seed)  # before the model is built, as run_glue.py does: the new head follows the seed
    split = Split.from_file(args.split)
    index = {label: i for i, label in enumerate(split.labels)}
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model,
        num_labels=len(split.labels),
        id2label=dict(enumerate(split.labels)),
        label2id=index,
    )

    class StepTimes(TrainerCallback):
        """Samples per second over windows of 10 optimizer steps (training only)."""

        def __init__(self, batch: int) -> None:
            self.batch, self.t0, self.steps, self.windows = batch, None, 0, []

        def on_step_begin(self, args, state, control, **kwargs):
            if self.t0 is None:
                self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.steps += 1
            if self.steps % 10 == 0:
                now = time.perf_counter()
                self.windows.append(10 * self.batch / (now - self.t0))
                self.t0 = now

    train_set, val_set, test_set = (encoded(tokenizer, rows, index, dynamic=args.tuned)
                                    for rows in (split.train, split.validation, split.test))
    bf16 = args.tuned and native_bf16()
    tuned = (
        tuned_arguments(
            TrainingArguments, args.batch_size, bf16, args.warmup_steps, args.weight_decay, args.learning_rate
        )
        if args.tuned
        else {}
    )
    with tempfile.TemporaryDirectory(prefix="hf-trainer-") as out_dir:
        training_args = TrainingArguments(
            output_dir=out_dir,
            num_train_epochs=args.epochs,
            report_to="none",
            disable_tqdm=True,
            seed=args.seed,
            **tuned,
        )
        steps = StepTimes(training_args.per_device_train_batch_size)
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train_set,
            callbacks=[steps],
            **({"data_collator": DataCollatorWithPadding(tokenizer)} if args.tuned else {}),
        )
        load = [loadavg()]
        t0 = time.perf_counter()
        output = trainer.train()
        train_s = time.perf_counter() - t0
        load.append(loadavg())
        val_pred = predict_in_order(trainer, val_set, val_set.labels).argmax(-1)
        test_pred = predict_in_order(trainer, test_set, test_set.labels).argmax(-1)
    val_acc, val_f1 = accuracy_and_f1(val_pred, np.array(val_set.labels), len(split.labels))
    test_acc, _ = accuracy_and_f1(test_pred, np.array(test_set.labels), len(split.labels))
    padding = f"max_length ({MAX_LENGTH})"
    if args.tuned:
        padding = "dynamic (DataCollatorWithPadding), length-grouped"
    result = WorkerResult(
        config="hf_trainer_tuned" if args.tuned else "hf_trainer",
        settings={
            "padding": padding,
            "precision": "bf16" if bf16 else "fp32",
            "native_bf16": native_bf16(),
            "optim": str(training_args.optim),
            **{k: str(v) for k, v in tuned.items() if k in ("group_by_length", "train_sampling_strategy")},
            "batch_size": training_args.per_device_train_batch_size,
            "learning_rate": training_args.learning_rate,
            "lr_scheduler": str(training_args.lr_scheduler_type),
            "warmup_steps": training_args.warmup_steps,
            "weight_decay": training_args.weight_decay,
            "max_grad_norm": training_args.max_grad_norm,
            "max_length": MAX_LENGTH,
            "seed": args.seed,
            "epochs": args.epochs,
            "optimizer_steps": output.global_step,
            "torch_threads": torch.get_num_threads(),
            "save_strategy": str(training_args.save_strategy),
        },
        samples_trained=float(len(train_set) * args.epochs),
        train_s=train_s,
        wall_s=time.perf_counter() - started,
        val_accuracy=val_acc,
        test_accuracy=test_acc,
        val_macro_f1=val_f1,
        step_samples_per_s=steps.windows,
        cpu_s=cpu_seconds(),
        loadavg=load,
        val_pred=val_pred.tolist(),
        test_pred=test_pred.tolist(),
    )
    args.out.write_text(json.dumps(result.__dict__))


if __name__ == "__main__":
    main()
