"""CSV into a Table, with the csv module (not pandas): pandas neither reports the line a multi-line
record starts on nor keeps "NA" or "007" as typed. Cells stay strings; only empty cells become None.
Every record is checked against the read limits as it is read, one record in memory at a time.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import IO, Any

from aiaas.core.errors import InvalidFile
from aiaas.data.formats import subject
from aiaas.data.limits import (
    Budget,
    ReadLimits,
    cell_too_large,
    row_too_large,
    too_many_columns,
    too_many_rows,
)
from aiaas.data.table import Table


class _RecordTooLong(Exception):
    pass


class _BoundedLines:
    """The file's lines for csv.reader, refusing a record (one or more lines) over `limit` characters
    before the csv module turns it into cells (a 500 MB line of "a," would be 250 million of them)."""

    def __init__(self, fh: IO[str], limit: int) -> None:
        self.fh = fh
        self.limit = limit
        self.record = 0  # characters read since the last record ended

    def __iter__(self) -> _BoundedLines:
        return self

    def __next__(self) -> str:
        line = self.fh.readline(self.limit - self.record + 1)
        if not line:
            raise StopIteration
        self.record += len(line)
        if self.record > self.limit:
            raise _RecordTooLong
        return line


class CsvRecords:
    """The data records of a CSV text as (line the record starts on, cells), checked against the limits
    as they are read: one record in memory at a time. `header` is set once the header row is read."""

    def __init__(self, fh: IO[str], delimiter: str, param: str, budget: Budget) -> None:
        self.fh = fh
        self.delimiter = delimiter
        self.param = param
        self.budget = budget
        self.header: list[str] | None = None
        self.rows = 0

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        limits, param = self.budget.limits, self.param
        if csv.field_size_limit() <= limits.max_cell_chars:
            csv.field_size_limit(limits.max_cell_chars + 1)  # our limit, with our error, decides
        lines = _BoundedLines(self.fh, limits.max_record_chars)
        reader = csv.reader(lines, delimiter=self.delimiter, strict=True)
        width = 0
        previous_end = 0  # physical line the previous record ended on
        try:
            for row in reader:
                lines.record = 0
                start = previous_end + 1
                previous_end = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue  # blank line, or a row of empty cells such as ",,"
                if max(map(len, row)) > limits.max_cell_chars:
                    raise cell_too_large(max(map(len, row)), f"line {start}", limits, param)
                if self.header is None:
                    self.header = _csv_header(row, start, param, limits)
                    width = len(self.header)
                    continue
                if len(row) != width:
                    raise _field_count_error(row, self.header, start, previous_end, self.delimiter, param)
                if self.rows >= limits.max_rows:
                    raise too_many_rows(f"more than {limits.max_rows}", limits, param)
                self.budget.add(width, sum(map(len, row)))
                self.rows += 1
                yield start, row
        except csv.Error as exc:
            raise _csv_syntax_error(exc, previous_end + 1, reader.line_num, param, limits) from None
        except _RecordTooLong:
            raise row_too_large(f"more than {limits.max_record_chars} characters", f"line {previous_end + 1}",
                                limits, param) from None
        if self.header is None:
            raise InvalidFile(
                f"{subject(param)} is empty. It needs a header row (for example: text,label) "
                "and at least one data row.",
                param=param,
            )


def check_nul(cell: str, where: str, param: str) -> None:
    if "\x00" in cell:
        raise InvalidFile(f"{where}: contains a NUL byte; the file looks binary or corrupted.", param=param)


def parse_csv(fh: IO[str], delimiter: str, param: str, keep: set[str] | None, budget: Budget) -> Table:
    records = CsvRecords(fh, delimiter, param, budget)
    kept: list[tuple[int, list[Any]]] | None = None
    positions: list[int] = []
    for start, row in records:
        if kept is None:
            assert records.header is not None
            kept = [(j, []) for j, name in enumerate(records.header) if keep is None or name in keep]
        positions.append(start)
        for j, values in kept:
            cell = row[j]
            if "\x00" in cell:
                check_nul(cell, f"line {start}", param)
            values.append(cell if cell else None)
    assert records.header is not None
    data = {records.header[j]: values for j, values in kept or ()}
    if kept is None:
        data = {name: [] for name in records.header if keep is None or name in keep}
    return Table("csv", None, records.header, data, positions, "line")


def _csv_header(row: list[str], line: int, param: str, limits: ReadLimits) -> list[str]:
    """Column names, trimmed; unnamed columns get 'column_N' so every column can be addressed."""
    if len(row) > limits.max_columns:
        raise too_many_columns(len(row), f"line {line}", limits, param)
    names: list[str] = []
    seen: set[str] = set()
    for j, raw in enumerate(row, start=1):
        name = raw.strip().lstrip("\ufeff").strip() or f"column_{j}"
        if name in seen:
            raise InvalidFile(
                f"line {line}: the header names column {name!r} more than once; "
                "give each column a unique name.",
                param=param,
            )
        seen.add(name)
        names.append(name)
    return names



def _field_count_error(
    row: list[str], header: list[str], start: int, end: int, delimiter: str, param: str
) -> InvalidFile:
    shown = "tab" if delimiter == "\t" else repr(delimiter)
    message = f"line {start}: expected {len(header)} fields, found {len(row)}"
    if end > start:
        message += (
            f". This record runs from line {start} to line {end}: a quote on line {start} "
            "is probably not closed"
        )
    elif len(row) > len(header):
        message += f". Put cells that contain the delimiter {shown} in double quotes"
    else:
        message += f". Every row needs one value per header column ({', '.join(map(repr, header))})"
    return InvalidFile(message + ".", param=param)


def _csv_syntax_error(exc: csv.Error, start: int, current: int, param: str, limits: ReadLimits) -> InvalidFile:
    text = str(exc)
    if "field larger than field limit" in text and csv.field_size_limit() > limits.max_cell_chars:
        # The field limit is ours plus one: the cell is over max_cell_chars.
        return cell_too_large(f"more than {limits.max_cell_chars}", f"line {start}", limits, param)
    if "unexpected end of data" in text:
        message = (
            f"line {start}: a quoted cell is never closed (unbalanced quote), so the record "
            "runs to the end of the file; add the missing closing quote"
        )
    elif "expected after" in text:
        message = (
            f"line {current}: unexpected character after a closing quote; inside a quoted cell "
            'write a quote as two quotes ("")'
        )
    elif "field larger than field limit" in text:
        message = (
            f"line {start}: a cell is longer than {csv.field_size_limit()} characters, which usually "
            f"means a quote on line {start} is not closed"
        )
    else:
        message = f"line {current}: could not parse the CSV ({text})"
    return InvalidFile(message + ".", param=param)
