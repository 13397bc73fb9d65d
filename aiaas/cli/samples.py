"""Texts from the user's own file to show predictions on (`aiaas quickstart data.csv --text-column review`)."""

from __future__ import annotations

from pathlib import Path

from aiaas.core.errors import InvalidRequest

DEFAULT_SAMPLES = 5


def sample_texts(path: Path, text_column: str, *, n: int = DEFAULT_SAMPLES) -> list[str]:
    """The first `n` distinct, non-empty texts of `text_column` in a CSV, JSONL or Parquet file.

    Read with aiaas.data's readers, so the formats and encodings are the ones an upload accepts. A column
    the file lacks, or one without any text, is an error naming the columns there are.
    """
    from aiaas.data.readers import load_table

    table = load_table(Path(path), filename=Path(path).name, param="file", columns=[text_column])
    if text_column not in table.data:
        raise InvalidRequest(
            f"{Path(path).name} has no column '{text_column}'; its columns are {', '.join(table.columns)}. "
            "Pass the one holding the texts with --text-column.",
            param="text_column",
        )
    texts: list[str] = []
    for value in table.data[text_column]:
        text = "" if value is None else str(value).strip()
        if text and text not in texts:
            texts.append(text)
            if len(texts) == n:
                break
    if not texts:
        raise InvalidRequest(f"column '{text_column}' of {Path(path).name} holds no text.", param="text_column")
    return texts
