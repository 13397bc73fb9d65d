"""The tuned Hugging Face Trainer baseline (bench/training/hf_worker.py) on a tiny BERT: it must score what it
learned. Issue #18: with length grouping on, the Trainer predicts in a shuffled length-grouped order, and the
worker read those predictions as if in the dataset's order, so a model that had learned scored chance.

Needs accelerate (the bench extra: the Trainer refuses to start without it); skipped where it is missing."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from bench.training.common import Split
from tests.helpers.tiny_bert import build_tiny_bert
from tests.training.conftest import BUG, PRAISE, REFUND

pytest.importorskip("accelerate", reason="the Trainer needs accelerate (pip install -e '.[bench]')")


def _rows(n: int, rng: random.Random) -> list[tuple[str, str]]:
    """refund vs bug by keyword, with 0-12 neutral filler words: lengths vary, so length grouping reorders."""
    rows = []
    for _ in range(n):
        label = rng.choice(["refund", "bug"])
        filler = " ".join(rng.choice(PRAISE) for _ in range(rng.randint(0, 12)))
        rows.append((f"{' '.join(rng.sample(REFUND if label == 'refund' else BUG, 2))} {filler}".strip(), label))
    return rows


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("hf_trainer") / "tiny-bert")


@pytest.mark.slow
def test_tuned_worker_scores_what_it_learned(tiny_model: Path, tmp_path: Path, monkeypatch) -> None:
    from bench.training import hf_worker

    rng = random.Random(0)
    split = Split(["bug", "refund"], _rows(96, rng), _rows(64, rng), _rows(64, rng))
    split.to_file(tmp_path / "split.json")
    out = tmp_path / "out.json"
    argv = [str(tmp_path / "split.json"), str(out), "--epochs", "6", "--model", str(tiny_model), "--tuned"]
    argv += ["--batch-size", "8", "--learning-rate", "0.003", "--warmup-steps", "2", "--weight-decay", "0.01"]
    monkeypatch.setattr(sys, "argv", ["hf_worker", *argv])
    hf_worker.main()
    result = json.loads(out.read_text())
    assert result["settings"].get("train_sampling_strategy", result["settings"].get("group_by_length"))
    # read in the sampler's order, the same predictions scored about 50%
    assert result["val_accuracy"] >= 0.9 and result["test_accuracy"] >= 0.9, result


@pytest.mark.slow
def test_tuned_bf16_on_cpu_autocasts_over_fp32_weights_and_learns(tiny_model: Path, tmp_path: Path) -> None:
    """bf16=True with use_cpu=True is autocast: the weights (and AdamW's updates) stay fp32."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from bench.training.hf_worker import predict_in_order, tuned_arguments

    rows = _rows(96, random.Random(1))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    enc = tokenizer([t for t, _ in rows], truncation=True, max_length=128)
    labels = [int(y == "refund") for _, y in rows]
    data = [{**{k: v[i] for k, v in enc.items()}, "labels": labels[i]} for i in range(len(rows))]
    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    tuned = tuned_arguments(TrainingArguments, 8, True, warmup_steps=2, weight_decay=0.01, learning_rate=3e-3)
    args = TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=6, report_to="none", disable_tqdm=True, logging_steps=4,
        save_strategy="no", **tuned,
    )
    assert args.mixed_precision == "bf16" and args.optim == "adamw_torch_fused"
    trainer = Trainer(
        model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[Losses()],
    )
    trainer.train()
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses
    accuracy = (predict_in_order(trainer, data, labels).argmax(-1) == labels).mean()
    assert accuracy >= 0.9
