"""Can the base model read the text? Its tokenizer's unknown-token rate on the training texts.

A BERT-family tokenizer maps characters outside its vocabulary to [UNK] (MiniLM-L6's
English WordPiece turns most Chinese characters into [UNK]): fine-tuning then learns
from little more than the texts' lengths. Measured: 10-class Chinese headlines, macro-F1
0.67 after minutes of fine-tuning, where character n-grams reach 0.82 in seconds. Above
UNK_SKIP, auto skips the transformer and says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiaas.training import components

# Share of the training texts' tokens (special tokens excluded) that are [UNK] above which
# auto does not spend its budget fine-tuning the base model (char-cnn gets it instead).
# Measured with MiniLM-L6's tokenizer: English movie-review sentences (bench set mr-sentences,
# 2,000 texts) 0.0%; Chinese product reviews 69% (six real reviews) to 72% (the tests' Chinese
# set). Anything from ~5% to ~65% separates those; 25% rather than the 10% because a
# skipped transformer loses its place in the validation comparison, and below the threshold that
# comparison already decides (bench zh-shopping: the transformer's 0.59 macro-F1 lost to
# tfidf-linear's 0.84 on validation). Text with 10-20% [UNK] (numbers, names, emoji, a few rare
# words) may still read well enough to win there.
UNK_SKIP = 0.25
SAMPLE = 2000  # texts looked at (evenly spaced): enough for a rate, cheap on big sets
MAX_LENGTH = 512


def unk_rate(base_model: str, texts: list[str], base_models_dir: Path | None) -> dict[str, Any]:
    """{"unk_rate", "tokens", "texts", "unk_token"} over an evenly spaced sample of `texts`."""
    base = components.resolve(base_model, base_models_dir)
    tokenizer = components.load_tokenizer(base)
    step = max(1, len(texts) // SAMPLE)
    sample = list(texts[::step])[:SAMPLE]
    unk = tokenizer.unk_token_id
    special = set(tokenizer.all_special_ids) - {unk}
    total = unknown = 0
    if sample:
        for ids in tokenizer(sample, truncation=True, max_length=MAX_LENGTH, padding=False)["input_ids"]:
            real = [i for i in ids if i not in special]
            total += len(real)
            unknown += sum(1 for i in real if i == unk)
    return {
        "unk_rate": round(unknown / total, 4) if total else 0.0,
        "tokens": total,
        "texts": len(sample),
        "unk_token": tokenizer.unk_token,
    }
