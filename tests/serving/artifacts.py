"""Build tiny trained-model directories (HF dir + aiaas.json) and torch reference outputs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from tests.helpers.tiny_bert import CORPUS, build_tiny_bert

TEXTS = [
    "my card was charged twice please refund",
    "the app crashes",
    "hi",
    "",
    "great service thank you very much the product is excellent and works well " * 3,  # truncated at 32
    "where is my package it is late",
    "login fails with an error message",
    "cancel my subscription today",
    "how do i change my delivery address",
    "terrible experience never again",
    "i want my money back for this order",
    "unknown zebra words xylophone",
]
MAX_LENGTH = 32


def make_model_dir(
    root: Path, task: str, labels: list[str], *, thresholds: list[float] | None = None
) -> Path:
    num_labels = 1 if task == "regression" else len(labels)
    model_dir = build_tiny_bert(root, num_labels=num_labels)
    if task == "multi_label_classification":
        config = json.loads((model_dir / "config.json").read_text())
        config["problem_type"] = task
        (model_dir / "config.json").write_text(json.dumps(config))
    meta = {"task": task, "labels": labels, "max_length": MAX_LENGTH, "do_lower_case": True}
    if thresholds is not None:
        meta["thresholds"] = thresholds
    (model_dir / "aiaas.json").write_text(json.dumps(meta))
    return model_dir


def word_soup(n: int, seed: int = 0) -> list[str]:
    """Varied texts from the tiny vocabulary, 1-20 words each."""
    words = " ".join(CORPUS).split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 20))) for _ in range(n)]


def torch_reference(model_dir: Path, texts: list[str], *, head: bool = True) -> dict[str, np.ndarray]:
    """Logits and mean-pooled, L2-normalised embeddings computed directly with torch, one text at a time
    (no padding), so the runtime's bucketing and padding are checked too."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    loader = AutoModelForSequenceClassification if head else AutoModel
    model = loader.from_pretrained(model_dir).eval()
    logits, embeddings = [], []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(text, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
            out = model(**enc, output_hidden_states=True)
            hidden = out.hidden_states[-1][0]
            pooled = hidden.mean(dim=0)
            embeddings.append((pooled / pooled.norm()).numpy())
            if head:
                logits.append(out.logits[0].numpy())
    result = {"embeddings": np.stack(embeddings)}
    if head:
        result["logits"] = np.stack(logits)
    return result
