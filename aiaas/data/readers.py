"""Read CSV, JSONL and Parquet into one column-oriented Table that remembers where rows came from.

Every row keeps its position in the file (the physical line its CSV record or JSON
object starts on, or the 1-based Parquet row), so every later error can say exactly
where to look. One module per format: csv_reader.py, json_reader.py, parquet_reader.py;
this one detects the format, decodes the text (trying the next candidate encoding when a
later byte fails) and refuses a file without data rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from aiaas.core.errors import InvalidFile
from aiaas.data.csv_reader import parse_csv
from aiaas.data.formats import Detected, decode_error, detect, subject
from aiaas.data.json_reader import parse_json_array, parse_jsonl
from aiaas.data.limits import Budget, ReadLimits
from aiaas.data.parquet_reader import read_parquet
from aiaas.data.table import Table
from aiaas.data.types import FileSummary

if TYPE_CHECKING:
    import pandas

__all__ = ["Table", "inspect_upload", "load_table", "read_table"]

logger = logging.getLogger(__name__)


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
                return parse_csv(fh, detected.delimiter, param, keep, budget)
        elif detected.kind == "jsonl":
            def parse(fh: IO[str], budget: Budget) -> Table:
                return parse_jsonl(fh, param, keep, budget)
        else:
            def parse(fh: IO[str], budget: Budget) -> Table:
                return parse_json_array(fh, param, keep, budget)
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
