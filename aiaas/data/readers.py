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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aiaas.core.errors import InvalidFile
from aiaas.data.formats import Detected, decode_error, detect, subject
from aiaas.data.types import FileSummary, Format

if TYPE_CHECKING:
    import pandas

logger = logging.getLogger(__name__)
# More columns than any training file needs; wide files only cost memory and time (and echo back in listings).
MAX_COLUMNS = 10_000


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
    path: Path, *, filename: str | None = None, param: str = "file", columns: Iterable[str] | None = None
) -> Table:
    """Read a file into a Table, keeping only `columns` (all columns when None)."""
    path = Path(path)
    detected = detect(path, filename=filename, param=param)
    keep = None if columns is None else set(columns)
    if detected.kind == "parquet":
        table = _read_parquet(path, param, keep)
    elif detected.kind == "csv":
        table = _decode_and_parse(
            path, detected, param, lambda fh: _parse_csv(fh, detected.delimiter, param, keep)
        )
    elif detected.kind == "jsonl":
        table = _decode_and_parse(path, detected, param, lambda fh: _parse_jsonl(fh, param, keep))
    else:
        table = _decode_and_parse(path, detected, param, lambda fh: _parse_json_array(fh, param, keep))
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


def inspect_upload(path: Path, *, filename: str) -> FileSummary:
    """Parse an uploaded file once, so a broken file is refused at upload with a useful error."""
    table = load_table(path, filename=filename, param="file", columns=())
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


def _parse_csv(fh: IO[str], delimiter: str, param: str, keep: set[str] | None) -> Table:
    reader = csv.reader(fh, delimiter=delimiter, strict=True)
    header: list[str] | None = None
    kept: list[tuple[int, list[Any]]] = []
    positions: list[int] = []
    width = 0
    previous_end = 0  # physical line the previous record ended on
    try:
        for row in reader:
            start = previous_end + 1
            previous_end = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # blank line, or a row of empty cells such as ",,"
            if header is None:
                header = _csv_header(row, start, param)
                width = len(header)
                kept = [(j, []) for j, name in enumerate(header) if keep is None or name in keep]
                continue
            if len(row) != width:
                raise _field_count_error(row, header, start, previous_end, delimiter, param)
            positions.append(start)
            for j, values in kept:
                cell = row[j]
                if "\x00" in cell:
                    raise InvalidFile(
                        f"line {start}: contains a NUL byte; the file looks binary or corrupted.", param=param
                    )
                values.append(cell if cell else None)
    except csv.Error as exc:
        raise _csv_syntax_error(exc, previous_end + 1, reader.line_num, param) from None
    if header is None:
        raise InvalidFile(
            f"{subject(param)} is empty. It needs a header row (for example: text,label) "
            "and at least one data row.",
            param=param,
        )
    data = {header[j]: values for j, values in kept}
    return Table("csv", None, header, data, positions, "line")


def _csv_header(row: list[str], line: int, param: str) -> list[str]:
    """Column names, trimmed; unnamed columns get 'column_N' so every column can be addressed."""
    _check_width(len(row), f"line {line}", param)
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


def _check_width(n: int, where: str, param: str) -> None:
    if n > MAX_COLUMNS:
        raise InvalidFile(
            f"{where}: {n} columns; at most {MAX_COLUMNS} are accepted. Keep the text and label columns "
            "(and few others) in the training file.",
            param=param,
        )


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


def _csv_syntax_error(exc: csv.Error, start: int, current: int, param: str) -> InvalidFile:
    text = str(exc)
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


class _Columns:
    """Accumulates JSON objects column-wise; keys missing from an object read as None."""

    def __init__(self, keep: set[str] | None, param: str = "file") -> None:
        self.keep = keep
        self.param = param
        self.names: list[str] = []
        self.seen: set[str] = set()
        self.data: dict[str, list[Any]] = {}
        self.positions: list[int] = []

    def add(self, obj: dict[str, Any], position: int) -> None:
        for key in obj:
            if key not in self.seen:
                if len(self.seen) >= MAX_COLUMNS:
                    _check_width(len(self.seen) + 1, f"record at {position}", self.param)
                self.seen.add(key)
                self.names.append(key)
                if self.keep is None or key in self.keep:
                    self.data[key] = [None] * len(self.positions)
        self.positions.append(position)
        for key, values in self.data.items():
            values.append(obj.get(key))

    def table(self, unit: str) -> Table:
        return Table("jsonl", None, self.names, self.data, self.positions, unit)


def _parse_jsonl(fh: IO[str], param: str, keep: set[str] | None) -> Table:
    columns = _Columns(keep, param)
    for line_no, line in enumerate(fh, start=1):
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
        columns.add(obj, line_no)
    return columns.table("line")


def _parse_json_array(fh: IO[str], param: str, keep: set[str] | None) -> Table:
    text = fh.read()
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
    columns = _Columns(keep, param)
    for number, obj in enumerate(records, start=1):
        if not isinstance(obj, dict):
            raise InvalidFile(
                f'record {number}: expected a JSON object such as {{"text": "...", "label": "..."}}, '
                f"found {_json_kind(obj)}.",
                param=param,
            )
        columns.add(obj, number)
    return columns.table("record")


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


# --- Parquet -----------------------------------------------------------------------------------


def _read_parquet(path: Path, param: str, keep: set[str] | None) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as parquet:
            # pandas stores its index as "__index_level_0__"; it is not the user's data.
            present = [n for n in parquet.schema_arrow.names if not str(n).startswith("__index_level_")]
            wanted = [n for n in present if keep is None or str(n) in keep]
            arrow = parquet.read(columns=wanted) if wanted else None
            rows = parquet.metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise InvalidFile(
            f"{subject(param)} could not be read as Parquet ({exc}); re-export it, or upload a CSV instead.",
            param=param,
        ) from None
    names = [str(n) for n in present]
    data: dict[str, list[Any]] = {}
    if arrow is not None:
        for name, column in zip(wanted, arrow.columns, strict=True):
            data[str(name)] = column.to_pylist()
    return Table("parquet", None, names, data, list(range(1, rows + 1)), "row")
