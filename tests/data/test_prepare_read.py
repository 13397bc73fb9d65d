"""prepare_read: a CSV or JSONL file cleaned as it streams gives what the whole table, cleaned, gives."""

from __future__ import annotations

import csv
import io
import json
import random

import pytest

from aiaas.core.errors import AiaasError, InvalidFile
from aiaas.data.cleaning import RowCleaner, clean_table
from aiaas.data.prepare_read import Columns, read_cleaned
from aiaas.data.readers import load_table
from aiaas.data.types import CleaningConfig

TASKS = ("single_label_classification", "multi_label_classification", "regression")
LABELS = {
    "single_label_classification": ["pos", "neg", " neu ", "1", "1.0", ""],
    "multi_label_classification": ["x|y", "y", "x;z", "", "[\"a\", \"b\"]"],
    "regression": ["1", "2.5", "-3", ""],
}


def _rows(rng: random.Random, task: str) -> list[tuple[str, str]]:
    words = ["a", "b", "B", " c", "d\n", ""]
    return [(" ".join(rng.choice(words) for _ in range(rng.randint(0, 3))), rng.choice(LABELS[task]))
            for _ in range(rng.randint(1, 200))]


def _write(write, rng: random.Random, fmt: str, rows: list[tuple[str, str]]):
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerows([("other", "text", "label"), *(("o", t, lab) for t, lab in rows)])
        return write("t.csv", out.getvalue())
    records = []
    for t, lab in rows:
        record = {"text": t or None, "label": lab or None, "n": rng.random()}
        if rng.random() < 0.1:
            del record["text"]
        records.append(json.dumps(record))
    return write("t.jsonl", "\n\n".join(records) + "\n")


def _whole(path, columns: Columns):
    """The reference: load_table's whole table, then clean_table."""
    table = load_table(path, filename=path.name, param="training_file", columns=(columns.text, columns.label))
    for column in (columns.text, columns.label):
        if column not in table.data:
            raise InvalidFile(f"no column {column}", param="text_column")
    cleaned = clean_table(table, text_column=columns.text, label_column=columns.label, task=columns.task,
                          config=columns.config, param="training_file")
    return (table.format, table.encoding, table.columns), cleaned


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("seed", range(8))
def test_streamed_equals_whole_table(write, fmt, seed):
    rng = random.Random(seed)
    task = TASKS[seed % 3]
    config = CleaningConfig(lowercase=rng.random() < 0.5, dedupe=seed % 4 != 3, drop_missing=seed % 5 != 4)
    columns = Columns("text", "label", task, config)  # type: ignore[arg-type]
    path = _write(write, rng, fmt, _rows(rng, task))
    try:
        expected = _whole(path, columns)
    except AiaasError as exc:
        with pytest.raises(type(exc)) as info:
            read_cleaned(path, path.name, "training_file", columns, None)
        assert info.value.param == exc.param
        if exc.param == "training_file":
            assert info.value.message == exc.message
        return
    info, cleaned = read_cleaned(path, path.name, "training_file", columns, None)
    assert (info.format, info.encoding, info.columns) == expected[0]
    assert vars(cleaned) == vars(expected[1])


def test_a_read_error_after_a_bad_row_is_the_one_reported(write):
    """As load_table reads the whole file before cleaning, a later syntax error wins over a row problem."""
    path = write("t.csv", 'text,label\n,a\nfine,b\n"unclosed,c\n')
    columns = Columns("text", "label", "single_label_classification", CleaningConfig(drop_missing=False))
    with pytest.raises(InvalidFile) as info:
        read_cleaned(path, path.name, "training_file", columns, None)
    assert "never closed" in info.value.message


def test_duplicates_are_not_kept_while_reading():
    rows = RowCleaner("single_label_classification", CleaningConfig(), "line")
    for i in range(1, 10_001):
        rows.add(i, "same text", "pos" if i % 2 else "pos ")
    rows.add(10_001, "same text", "neg")
    rows.add(10_002, "same text", "neg")
    assert len(rows.texts) == 2  # one per distinct (text, label), however many copies were read
    cleaned = rows.result(10_002, "training_file")
    assert cleaned.dropped == {
        "missing_text": 0, "missing_label": 0, "duplicate": 10_000, "conflicting_label": 2}
    assert cleaned.conflicts == [{"lines": [1, 10_001], "labels": ["pos", "neg"]}]
    assert len(cleaned) == 0
