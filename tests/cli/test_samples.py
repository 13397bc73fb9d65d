"""`sample_texts`: the texts of the user's own file that quickstart shows predictions on, in every upload format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiaas.cli.samples import sample_texts
from aiaas.core.errors import InvalidFile, InvalidRequest

ROWS = [
    {"id": 1, "review": "arrived broken", "sentiment": "neg"},
    {"id": 2, "review": "", "sentiment": "neg"},
    {"id": 3, "review": "  love it  ", "sentiment": "pos"},
    {"id": 4, "review": "arrived broken", "sentiment": "neg"},
    {"id": 5, "review": "works as described", "sentiment": "pos"},
    {"id": 6, "review": "never again", "sentiment": "neg"},
]
EXPECTED = ["arrived broken", "love it", "works as described"]


def write(tmp_path: Path, fmt: str) -> Path:
    path = tmp_path / f"reviews.{fmt}"
    if fmt == "csv":
        lines = ["id,review,sentiment", *(f"{r['id']},{r['review']},{r['sentiment']}" for r in ROWS)]
        path.write_bytes(("\ufeff" + "\n".join(lines) + "\n").encode("utf-8"))  # with a BOM, as Excel writes
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_first_distinct_texts_of_the_named_column(tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path, fmt)
    assert sample_texts(path, "review", n=3) == EXPECTED
    assert sample_texts(path, "review", n=10) == [*EXPECTED, "never again"]


def test_a_missing_column_names_the_ones_there_are(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as e:
        sample_texts(write(tmp_path, "csv"), "text")
    assert e.value.param == "text_column" and "id, review, sentiment" in e.value.message


def test_a_column_without_text_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text('{"review": "", "label": "a"}\n{"review": null, "label": "b"}\n')
    with pytest.raises(InvalidRequest, match="holds no text"):
        sample_texts(path, "review")


def test_an_unreadable_file_is_the_readers_error(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("review\n")
    with pytest.raises(InvalidFile):
        sample_texts(path, "review")
