"""Read a training or validation file for prepare_dataset, cleaning each record as it is read.

readers.load_table builds the whole table (every cell a Python object) before anything is
cleaned: ~4.5 bytes of memory per byte of file. Here a CSV or JSONL file is read one record at
a time and each record goes straight to a cleaning.RowCleaner, which keeps only the rows that
survive cleaning and deduplication; the cells of the other columns are never kept. The same
record readers (CsvRecords, jsonl_records), limits and encoding retries as load_table apply, and
the refusals come in the same order (read errors, no rows, missing column, row problems), so a
file gets the same errors and the same report either way (tests/data/test_prepare.py).

Parquet and JSON-array files are read whole by load_table, then cleaned row by row.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from aiaas.core.errors import InvalidFile
from aiaas.data.cleaning import Cleaned, RowCleaner
from aiaas.data.csv_reader import CsvRecords, check_nul
from aiaas.data.formats import Detected, decode_error, detect, subject
from aiaas.data.json_reader import JsonSchema, jsonl_records
from aiaas.data.limits import Budget, ReadLimits
from aiaas.data.readers import load_table
from aiaas.data.types import CleaningConfig, Format, Task

MAX_COLUMNS_SHOWN = 20


@dataclass
class FileRead:
    """What the data report says about a file read: its format, encoding and columns."""

    format: Format
    encoding: str | None
    columns: list[str]


@dataclass(frozen=True)
class Columns:
    """The two columns prepare_dataset reads, and how rows are cleaned."""

    text: str
    label: str
    task: Task
    config: CleaningConfig


def read_cleaned(path: Path, filename: str | None, param: str, columns: Columns,
                 limits: ReadLimits | None) -> tuple[FileRead, Cleaned]:
    """The file's summary and its cleaned rows; raises what load_table and clean_table would raise."""
    path = Path(path)
    limits = limits or ReadLimits.current()
    detected = detect(path, filename=filename, param=param)
    if detected.kind not in ("csv", "jsonl"):
        return _read_whole(path, filename, param, columns, limits)
    size = path.stat().st_size
    for encoding in detected.encodings:
        try:
            with open(path, encoding=encoding, newline="") as fh:
                info, rows, read = _stream(fh, detected, columns, Budget(limits, size, param))
        except UnicodeDecodeError:
            continue  # a later byte is not this encoding: start again with the next one
        info.encoding = encoding
        if read == 0:
            raise InvalidFile(
                f"{subject(param)} has a header but no data rows; add at least one row below the header."
                if info.format == "csv" else f"{subject(param)} has no rows.",
                param=param,
            )
        check_columns(info, columns, param, info.columns)
        return info, rows.result(read, param)
    raise decode_error(param)


def _stream(fh: IO[str], detected: Detected, columns: Columns,
            budget: Budget) -> tuple[FileRead, RowCleaner, int]:
    rows = RowCleaner(columns.task, columns.config, "line")
    if detected.kind == "csv":
        records = CsvRecords(fh, detected.delimiter, budget.param, budget)
        kept: list[int] | None = None
        for start, row in records:
            if kept is None:
                header = records.header or []
                kept = [header.index(c) if c in header else -1 for c in (columns.text, columns.label)]
            for j in kept:
                if j >= 0 and "\x00" in row[j]:
                    check_nul(row[j], f"line {start}", budget.param)
            if kept[0] >= 0 and kept[1] >= 0:  # else refused once the whole file is read, as load_table does
                rows.add(start, row[kept[0]] or None, row[kept[1]] or None)
        return FileRead("csv", None, records.header or []), rows, records.rows
    schema = JsonSchema(budget.param, budget)
    for line_no, obj in jsonl_records(fh, budget.param, budget.limits):
        schema.check(obj, f"line {line_no}")
        rows.add(line_no, obj.get(columns.text), obj.get(columns.label))
    return FileRead("jsonl", None, schema.names), rows, schema.rows


def _read_whole(path: Path, filename: str | None, param: str, columns: Columns,
                limits: ReadLimits) -> tuple[FileRead, Cleaned]:
    table = load_table(path, filename=filename, param=param, columns=(columns.text, columns.label),
                       limits=limits)
    info = FileRead(table.format, table.encoding, table.columns)
    check_columns(info, columns, param, table.data)
    rows = RowCleaner(columns.task, columns.config, table.unit)
    for position, text, label in zip(table.positions, table.data[columns.text], table.data[columns.label],
                                     strict=True):
        rows.add(position, text, label)
    return info, rows.result(table.rows, param)


def check_columns(info: FileRead, columns: Columns, param: str, found: Container[str]) -> None:
    """Refuse a file without the text or label column, naming the columns it has."""
    for column, column_param in ((columns.text, "text_column"), (columns.label, "label_column")):
        if column not in found:
            raise _missing_column(info, column, column_param, param)


def _missing_column(info: FileRead, column: str, column_param: str, param: str) -> InvalidFile:
    shown = ", ".join(repr(c) for c in info.columns[:MAX_COLUMNS_SHOWN])
    if len(info.columns) > MAX_COLUMNS_SHOWN:
        shown += f", ... ({len(info.columns)} in all)"
    message = f"{param} has no column {column!r}; its columns are: {shown}. Set {column_param} to one of them"
    close = [c for c in info.columns if c.strip().casefold() == column.strip().casefold()]
    if close:
        message += f" (probably {close[0]!r})"
    return InvalidFile(message + ".", param=column_param)
