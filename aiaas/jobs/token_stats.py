"""The data report's token statistics, taken by the job runner once the training rows are final."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def token_stats(data: Any, model_dir: Path | None) -> None:
    """Token length percentiles of `data.train` in `data.report`: with the transformer's tokenizer in
    `model_dir`, or (None) with tfidf-linear's character tokenizer. For the latter the lengths are taken
    before its truncation at MAX_CHARS, so truncated_rows counts the rows it cuts, and the encoding is
    kept in `data.encodings` for train_classical to featurise (one encoding pass, not two: ~20% of a
    100k-row job's CPU, and 2 GB of tokenizer output when it was held whole)."""
    from aiaas.data import add_token_stats
    from aiaas.training import classical

    texts = [e.text for e in data.train]
    if model_dir is not None:
        add_token_stats(data.report, _token_lengths(model_dir, texts))
        return
    encoded = classical.encode_training(texts)
    add_token_stats(data.report, encoded.lengths, max_length=classical.MAX_CHARS)
    data.encodings[classical.FAMILY] = encoded


def _token_lengths(model_dir: Path, texts: list[str]) -> list[int]:
    from tokenizers import Tokenizer

    path = model_dir / "tokenizer.json"
    if not path.exists():
        return [len(t.split()) for t in texts]
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return [len(e.ids) for e in tok.encode_batch(texts)]
