"""Parse CSV, JSONL and Parquet into one column-oriented Table that remembers where rows came from.

Every row keeps its position in the file (the physical line its CSV record or JSON
object starts on, or the 1-based Parquet row), so every later error can say exactly
where to look. CSV is parsed with the csv module rather than pandas because pandas
neither reports the line a multi-line record starts on nor keeps "NA" or "007" as
typed; cells stay strings, and only empty cells become None.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aiaas.core.errors import InvalidFile
from aiaas.data.formats import Detected, decode_error, detect, subject
from aiaas.data.limits import (
    Budget,
    ReadLimits,
    cell_too_large,
    row_too_large,
    too_large_decoded,
    too_many_columns,
    too_many_rows,
)
from aiaas.data.parquet_reader import read_parquet
from aiaas.data.types import FileSummary, Format

if TYPE_CHECKING:
    import pandas

logger = logging.getLogger(__name__)
# A JSON token (a string literal, a bracket or a comma), to count a JSON text's values without parsing
# it. Linear: possessive (no backtracking into a string), and an unterminated string runs to the end,
# so no start is tried twice.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)|[\[\]{},]', re.DOTALL)


@dataclass
class Table:
    """Parsed rows, column by column. `data` holds only the columns that were asked for."""

    format: Format
    encoding: str | None
    columns: list[str]
    data: dict[str, list[Any]]
    positions: list[int]
    unit: str  # "line" for CSV/JSONL, "row" for Parquet, "record" for a JSON array

    @property
    def rows(self) -> int:
        return len(self.positions)

    def where(self, i: int) -> str:
        """'line 17' for the i-th row, as error messages put it."""
        return f"{self.unit} {self.positions[i]}"


def load_table(
    path: Path,
    *,
    filename: str | None = None,
    param: str = "file",
    columns: Iterable[str] | None = None,
    limits: ReadLimits | None = None,
) -> Table:
    """Read a file into a Table, keeping only `columns` (all columns when None).

    Every format is held to `limits` (the process settings' when None) on what it decodes to:
    over one, a DecodedLimitExceeded (400) whose code names the limit.
    """
    path = Path(path)
    limits = limits or ReadLimits.current()
    detected = detect(path, filename=filename, param=param)
    keep = None if columns is None else set(columns)
    size = path.stat().st_size
    if detected.kind == "parquet":
        names, data, rows = read_parquet(path, param, keep, limits)
        table = Table("parquet", None, names, data, list(range(1, rows + 1)), "row")
    else:
        if detected.kind == "csv":
            def parse(fh: IO[str], budget: Budget) -> Table:
                return _parse_csv(fh, detected.delimiter, param, keep, budget)
        elif detected.kind == "jsonl":
            def parse(fh: IO[str], budget: Budget) -> Table:
                return _parse_jsonl(fh, param, keep, budget)
        else:
            def parse(fh: IO[str], budget: Budget) -> Table:
                return _parse_json_array(fh, param, keep, budget)
        table = _decode_and_parse(path, detected, param, lambda fh: parse(fh, Budget(limits, size, param)))
    if table.rows == 0:
        raise InvalidFile(
            f"{subject(param)} has a header but no data rows; add at least one row below the header."
            if table.format == "csv"
            else f"{subject(param)} has no rows.",
            param=param,
        )
    logger.debug("read %s: %s, %s, %d rows", path.name, table.format, table.encoding, table.rows)
    return table


def read_table(path: Path, *, filename: str | None = None, param: str = "file") -> pandas.DataFrame:
    """Read a file into a DataFrame of its cells, indexed by file line (or Parquet row) number.

    CSV cells are strings (None for empty cells); JSONL and Parquet keep their JSON/Arrow
    values. The dtype is object throughout so nothing is coerced behind the caller's back.
    """
    import pandas as pd

    table = load_table(path, filename=filename, param=param)
    index = pd.Index(table.positions, name=table.unit)
    return pd.DataFrame({c: table.data[c] for c in table.columns}, index=index, dtype=object)


def inspect_upload(path: Path, *, filename: str, limits: ReadLimits | None = None) -> FileSummary:
    """Parse an uploaded file once, so a broken file is refused at upload with a useful error."""
    table = load_table(path, filename=filename, param="file", columns=(), limits=limits)
    return FileSummary(format=table.format, encoding=table.encoding, rows=table.rows, columns=table.columns)


def _decode_and_parse(path: Path, detected: Detected, param: str, parse: Callable[[IO[str]], Table]) -> Table:
    """Run `parse` over the decoded file, retrying with the next encoding if a later byte fails."""
    for encoding in detected.encodings:
        try:
            with open(path, encoding=encoding, newline="") as fh:
                result = parse(fh)
        except UnicodeDecodeError:
            logger.debug(
                "%s is not %s past the sniffed sample; trying the next encoding", path.name, encoding
            )
            continue
        result.encoding = encoding
        return result
    raise decode_error(param)


# --- CSV ---------------------------------------------------------------------------------------


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


def _parse_csv(fh: IO[str], delimiter: str, param: str, keep: set[str] | None, budget: Budget) -> Table:
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


def _loads(text: str, where: str, param: str) -> Any:
    """json.loads that turns every way JSON can hurt us into a line-numbered InvalidFile:
    nesting too deep, integers too long to convert, and lone surrogate escapes (not UTF-8)."""
    try:
        obj = json.loads(text)
        json.dumps(obj, ensure_ascii=False).encode("utf-8")  # lone surrogates ("\ud800") cannot encode
    except json.JSONDecodeError as exc:
        raise InvalidFile(
            f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); a JSONL file needs one complete "
            "JSON object per line.",
            param=param,
        ) from None
    except RecursionError:
        raise InvalidFile(f"{where}: JSON nested too deeply; flatten the record.", param=param) from None
    except UnicodeEncodeError:
        raise InvalidFile(f"{where}: a string holds an unpaired surrogate escape (like \\ud800), which is not "
                          "valid Unicode; fix or remove it.", param=param) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise InvalidFile(f"{where}: a value could not be read ({exc}); write very long numbers as strings.",
                          param=param) from None
    return obj


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


# --- JSON --------------------------------------------------------------------------------------


class JsonSchema:
    """The columns seen so far in a run of JSON objects, each object checked against the limits."""

    def __init__(self, param: str, budget: Budget) -> None:
        self.param = param
        self.budget = budget
        self.names: list[str] = []
        self.seen: set[str] = set()
        self.rows = 0

    def check(self, obj: dict[str, Any], where: str) -> list[str]:
        """Count `obj` against the limits; returns the keys it is the first to use."""
        limits = self.budget.limits
        if self.rows >= limits.max_rows:
            raise too_many_rows(f"more than {limits.max_rows}", limits, self.param)
        nested, chars, longest = _measure_record(obj)
        if longest > limits.max_cell_chars:
            raise cell_too_large(longest, where, limits, self.param)
        if nested > limits.max_columns or chars > limits.max_record_chars:
            raise row_too_large(f"{nested} nested values and {chars} characters", where, limits, self.param)
        self.budget.add(len(obj) + nested, chars)
        new: list[str] = []
        for key in obj:
            if key not in self.seen:
                if len(self.seen) >= limits.max_columns:
                    raise too_many_columns(f"more than {limits.max_columns}", where, limits, self.param)
                self.seen.add(key)
                self.names.append(key)
                new.append(key)
        self.rows += 1
        return new


class _Columns:
    """Accumulates JSON objects column-wise; keys missing from an object read as None."""

    def __init__(self, keep: set[str] | None, param: str, budget: Budget) -> None:
        self.keep = keep
        self.schema = JsonSchema(param, budget)
        self.data: dict[str, list[Any]] = {}
        self.positions: list[int] = []

    def add(self, obj: dict[str, Any], position: int, where: str) -> None:
        for key in self.schema.check(obj, where):
            if self.keep is None or key in self.keep:
                self.data[key] = [None] * len(self.positions)
        self.positions.append(position)
        for key, values in self.data.items():
            values.append(obj.get(key))

    def table(self, unit: str) -> Table:
        return Table("jsonl", None, self.schema.names, self.data, self.positions, unit)


def _measure_record(obj: dict[str, Any]) -> tuple[int, int, int]:
    """(values nested inside its cells, characters of its keys and strings, longest string) of a record."""
    nested = chars = longest = 0
    stack = list(obj.values())
    for key in obj:
        chars += len(key)
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            chars += len(value)
            longest = max(longest, len(value))
        elif isinstance(value, list):
            nested += len(value)
            stack.extend(value)
        elif isinstance(value, dict):
            nested += len(value)
            for key, item in value.items():
                chars += len(key)
                stack.append(item)
    return nested, chars, longest


def jsonl_records(fh: IO[str], param: str, limits: ReadLimits) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL text, one line in memory at a time."""
    limit = limits.max_record_chars
    line_no = 0
    # readline with a size: a 500 MB line is refused after max_record_chars, never read whole.
    while line := fh.readline(limit + 1):
        line_no += 1
        if len(line) > limit and not line.endswith(("\n", "\r")):
            raise row_too_large(f"more than {limit} characters", f"line {line_no}", limits, param)
        line = line.lstrip("\ufeff")
        if not line.strip():
            continue
        obj = _loads(line, f"line {line_no}", param)
        if not isinstance(obj, dict):
            raise InvalidFile(
                f'line {line_no}: expected a JSON object such as {{"text": "...", "label": "..."}}, '
                f"found {_json_kind(obj)}.",
                param=param,
            )
        yield line_no, obj


def _parse_jsonl(fh: IO[str], param: str, keep: set[str] | None, budget: Budget) -> Table:
    columns = _Columns(keep, param, budget)
    for line_no, obj in jsonl_records(fh, param, budget.limits):
        columns.add(obj, line_no, f"line {line_no}")
    return columns.table("line")


# Below this many values a JSON array is parsed at once: at most ~70 bytes each, whatever they are.
_JSON_WALK_ABOVE = 1_000_000


def _count_json_values(text: str, budget: Budget, walk_above: int = _JSON_WALK_ABOVE) -> None:
    """Refuse a JSON array that would parse into too many values, before parsing it (json.loads makes a
    Python object of every value: `[[],[],...]` costs ~20 bytes of memory per byte of text).

    A cheap upper bound (punctuation inside strings counts too) lets ordinary files through at once;
    above it, one pass over the tokens (strings, brackets, commas) counts each record's values, and
    stops at the first record over the per-record bound or once the file is over the cell limit.
    """
    limits = budget.limits
    allowed = limits.max_cells + 2 * limits.max_rows + 1  # every cell, each record's object and comma
    if text.count(",") + text.count("[") + text.count("{") <= min(allowed, walk_above):
        return
    # A record with every column and every nested value the limits allow: a key, a value and a comma per
    # column, a value and a comma per nested value, a bracket pair per list.
    per_record = 6 * limits.max_columns + 8
    depth = values = total = record = 0
    for m in _JSON_TOKEN.finditer(text):
        ch = text[m.start()]
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 1:
                record += 1
                values = 0
        if depth >= 2 or ch == ",":
            values += 1
            total += 1
            if values > per_record:
                raise row_too_large(f"more than {per_record} values and separators", f"record {record + 1}",
                                    limits, budget.param)
            if total > allowed:
                raise too_large_decoded(f"more than {limits.max_cells} cells; at most that many are accepted",
                                        limits, budget.param, "AIAAS_MAX_UPLOAD_CELLS")


def _parse_json_array(fh: IO[str], param: str, keep: set[str] | None, budget: Budget) -> Table:
    text = fh.read()
    _count_json_values(text, budget)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidFile(
            f"line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}).", param=param
        ) from None
    except (RecursionError, ValueError):
        records = _loads(text, "the file", param)  # repeats the parse only to word the error
    try:
        json.dumps(records, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError, ValueError):
        _loads(text, "the file", param)  # raises the worded error
    if not isinstance(records, list):
        raise InvalidFile(f"{subject(param)} must hold a JSON array of objects or JSON lines.", param=param)
    columns = _Columns(keep, param, budget)
    for number, obj in enumerate(records, start=1):
        if not isinstance(obj, dict):
            raise InvalidFile(
                f'record {number}: expected a JSON object such as {{"text": "...", "label": "..."}}, '
                f"found {_json_kind(obj)}.",
                param=param,
            )
        columns.add(obj, number, f"record {number}")
    return columns.table("record")


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"
