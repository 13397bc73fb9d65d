"""The baseline: Hugging Face `Trainer` with its defaults, data prepared the way its text
classification examples do (`padding="max_length"`, max_length 128, as run_glue.py's
defaults), fp32. Only what has no default is set: the epochs, the output directory, no
integrations. Run in its own process by bench.training.run:

    python -m bench.training.hf_worker SPLIT.json OUT.json --epochs 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.training.common import Split, WorkerResult, accuracy_and_f1, cpu_seconds, loadavg

MAX_LENGTH = 128


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser()
    parser.add_argument("split", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()

    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    split = Split.from_file(args.split)
    index = {label: i for i, label in enumerate(split.labels)}
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model,
        num_labels=len(split.labels),
        id2label=dict(enumerate(split.labels)),
        label2id=index,
    )

    class Encoded(torch.utils.data.Dataset):
        def __init__(self, rows: list[tuple[str, str]]) -> None:
            self.enc = tokenizer(
                [t for t, _ in rows], padding="max_length", truncation=True, max_length=MAX_LENGTH
            )
            self.labels = [index[label] for _, label in rows]

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int) -> dict:
            item = {k: torch.tensor(v[i]) for k, v in self.enc.items()}
            item["labels"] = torch.tensor(self.labels[i])
            return item

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

    train_set, val_set, test_set = Encoded(split.train), Encoded(split.validation), Encoded(split.test)
    with tempfile.TemporaryDirectory(prefix="hf-trainer-") as out_dir:
        training_args = TrainingArguments(
            output_dir=out_dir, num_train_epochs=args.epochs, report_to="none", disable_tqdm=True
        )
        steps = StepTimes(training_args.per_device_train_batch_size)
        trainer = Trainer(model=model, args=training_args, train_dataset=train_set, callbacks=[steps])
        load = [loadavg()]
        t0 = time.perf_counter()
        output = trainer.train()
        train_s = time.perf_counter() - t0
        load.append(loadavg())
        val_pred = np.asarray(trainer.predict(val_set).predictions).argmax(-1)
        test_pred = np.asarray(trainer.predict(test_set).predictions).argmax(-1)
    val_acc, val_f1 = accuracy_and_f1(val_pred, np.array(val_set.labels), len(split.labels))
    test_acc, _ = accuracy_and_f1(test_pred, np.array(test_set.labels), len(split.labels))
    result = WorkerResult(
        config="hf_trainer",
        settings={
            "padding": f"max_length ({MAX_LENGTH})",
            "precision": "fp32",
            "batch_size": training_args.per_device_train_batch_size,
            "learning_rate": training_args.learning_rate,
            "lr_scheduler": str(training_args.lr_scheduler_type),
            "warmup_steps": training_args.warmup_steps,
            "weight_decay": training_args.weight_decay,
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
