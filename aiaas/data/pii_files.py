"""PII scan of a whole uploaded file, and the same file rewritten with the values redacted.

aiaas/data/pii.py finds PII in one string; this applies it to every string cell of a
parsed file (every column, header excluded; numbers, booleans and nested JSON values are
not scanned) and says where it is in the file's own terms: the line (CSV, JSONL), row
(Parquet) or record (JSON array) and the column. The report is safe to store and show:
kinds, counts, positions and column names, never the values.

A redacted file keeps everything the scan did not change: the same columns in the same
order, CSV rows on the same lines (blank lines are padded back in), Parquet column types
and metadata. What it does change: text is re-encoded as UTF-8, CSV quoting is the csv
module's minimal quoting, and JSON is re-serialised (an explicit null and a missing key
read the same here, so nulls are left out).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from aiaas.core.errors import PiiDetected
from aiaas.data.formats import detect
from aiaas.data.pii import PII_KINDS, might_contain_pii, redact_findings, scan_text
from aiaas.data.table import Table

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 5  # positions kept per kind
MAX_COLUMNS_PER_KIND = 20  # column names kept per kind (a file may have 10,000 columns)
_BITS = {kind: 1 << i for i, kind in enumerate(PII_KINDS)}  # 7 kinds: one byte of flags per row


@dataclass
class TableScan:
    """The report (safe to store) and, when asked for, each changed cell's redacted text."""

    report: dict[str, Any]
    redactions: dict[str, dict[int, str]] = field(default_factory=dict)  # column -> {row index: text}

    @property
    def found(self) -> int:
        return int(self.report["findings"])


class PiiTally:
    """The scan's running report, fed one row at a time (so a file can be scanned as it streams past)."""

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.rows = self.cells = self.rows_with_pii = 0
        self.counts = dict.fromkeys(PII_KINDS, 0)
        self.kind_rows = dict.fromkeys(PII_KINDS, 0)
        self.examples: dict[str, list[int]] = {kind: [] for kind in PII_KINDS}
        self.columns: dict[str, dict[int, str]] = {kind: {} for kind in PII_KINDS}  # column index -> name

    def row(self, position: int, cells: Iterable[tuple[int, str, Any]], *, redact: bool = False) -> dict[str, str]:
        """Scan one row's (column index, column name, value) cells; the redacted text of each changed cell."""
        self.rows += 1
        flags = 0  # bit per kind: which kinds this row holds
        changed: dict[str, str] = {}
        for j, name, value in cells:
            if not isinstance(value, str):
                continue
            self.cells += 1
            findings = scan_text(value) if might_contain_pii(value) else None
            if not findings:
                continue
            for f in findings:
                self.counts[f.kind] += 1
            for kind in {f.kind for f in findings}:
                flags |= _BITS[kind]
                self.columns[kind].setdefault(j, name)
            if redact:
                changed[name] = redact_findings(value, findings)
        if flags:
            self.rows_with_pii += 1
            for kind in PII_KINDS:
                if flags & _BITS[kind]:
                    self.kind_rows[kind] += 1
                    if len(self.examples[kind]) < MAX_EXAMPLES:
                        self.examples[kind].append(position)
        return changed

    def skip(self, rows: int, cells: int) -> None:
        """Count `rows` rows holding `cells` string cells that a pre-check showed hold no PII (bulk_check.py)."""
        self.rows += rows
        self.cells += cells

    @property
    def found(self) -> int:
        return sum(self.counts.values())

    def report(self, *, redact: bool) -> dict[str, Any]:
        total = self.found
        return {
            "unit": self.unit,
            "rows_scanned": self.rows,
            "cells_scanned": self.cells,
            "rows_with_pii": self.rows_with_pii,
            "findings": total,
            "redacted": total if redact else 0,
            "counts": dict(self.counts),
            "kinds": {
                kind: {
                    "count": self.counts[kind],
                    "rows": self.kind_rows[kind],
                    "columns": [self.columns[kind][j] for j in sorted(self.columns[kind])][:MAX_COLUMNS_PER_KIND],
                    "examples": sorted(self.examples[kind]),
                }
                for kind in PII_KINDS
                if self.counts[kind]
            },
        }


def scan_table(table: Table, *, redact: bool = False) -> TableScan:
    """Scan every string cell of `table` (all its columns must be loaded)."""
    columns: list[tuple[int, str, list[Any]]] = []
    for j, name in enumerate(table.columns):
        values = table.data.get(name)
        if values is None:
            raise ValueError(f"column {name!r} was not loaded; scan a table read with all columns")
        columns.append((j, name, values))
    tally = PiiTally(table.unit)
    redactions: dict[str, dict[int, str]] = {}
    for i, position in enumerate(table.positions):
        changed = tally.row(position, ((j, name, values[i]) for j, name, values in columns), redact=redact)
        for name, text in changed.items():
            redactions.setdefault(name, {})[i] = text
    logger.debug("PII scan: %d findings in %d of %d rows", tally.found, tally.rows_with_pii, table.rows)
    return TableScan(tally.report(redact=redact), redactions)


def rejection(report: dict[str, Any], *, param: str = "file") -> PiiDetected:
    """The error for policy 'reject': which kinds, where (unit numbers and columns), never the values."""
    unit = report["unit"]
    parts = []
    for kind, info in report["kinds"].items():
        where = info["examples"]
        more = "" if info["rows"] <= len(where) else f" and {info['rows'] - len(where)} more"
        columns = ", ".join(repr(c if len(c) <= 60 else c[:57] + "...") for c in info["columns"])
        if len(info["columns"]) == MAX_COLUMNS_PER_KIND:
            columns += " and maybe more"
        parts.append(
            f"{kind}: {info['count']} ({unit}{'s' if len(where) > 1 else ''} "
            f"{', '.join(map(str, where))}{more}; column{'s' if len(info['columns']) > 1 else ''} {columns})"
        )
    return PiiDetected(
        f"The file contains personal information and its PII policy is 'reject': {'; '.join(parts)}. "
        "Remove or mask these values and upload it again, or upload it with pii_policy 'redact' to store it "
        "with each value replaced by a placeholder such as [EMAIL].",
        param=param,
    )


# --- writing the redacted file -------------------------------------------------------------------


def write_redacted(path: Path, *, filename: str, table: Table, redactions: dict[str, dict[int, str]],
                   out: BinaryIO) -> None:
    """Write the file at `path` (parsed as `table`) to `out` with the redacted cells swapped in."""
    if table.format == "parquet":
        _write_parquet(path, redactions, out)
        return
    detected = detect(path, filename=filename, param="file")
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        if table.format == "csv":
            _write_csv(table, redactions, text, detected.delimiter, _line_ending(path, detected.encodings[0]))
        elif table.unit == "line":
            _write_jsonl(table, redactions, text)
        else:
            _write_json_array(table, redactions, text)
        text.flush()
    finally:
        text.detach()  # leave `out` open for the caller


def _cell(table: Table, redactions: dict[str, dict[int, str]], name: str, i: int) -> Any:
    changed = redactions.get(name)
    if changed is not None and i in changed:
        return changed[i]
    return table.data[name][i]


def _line_ending(path: Path, encoding: str) -> str:
    with open(path, "rb") as fh:
        sample = codecs.decode(fh.read(64 * 1024), encoding, errors="ignore")
    return "\r\n" if sample.split("\n", 1)[0].endswith("\r") else "\n"


class _LineCounter:
    """Counts the line breaks written (as the csv reader counts them: \\r\\n, \\r or \\n)."""

    def __init__(self, out: io.TextIOBase) -> None:
        self.out = out
        self.lines = 0

    def write(self, s: str) -> int:
        self.lines += s.count("\n") + s.count("\r") - s.count("\r\n")
        return self.out.write(s)


def _write_csv(table: Table, redactions: dict[str, dict[int, str]], out: io.TextIOBase, delimiter: str,
               ending: str) -> None:
    counter = _LineCounter(out)
    writer = csv.writer(counter, delimiter=delimiter, lineterminator=ending)
    writer.writerow(table.columns)
    for i, position in enumerate(table.positions):
        # Blank lines are skipped when the file is read, so padding keeps every row on its line.
        if position > counter.lines + 1:
            counter.write(ending * (position - counter.lines - 1))
        writer.writerow(["" if (v := _cell(table, redactions, c, i)) is None else v for c in table.columns])


def _record(table: Table, redactions: dict[str, dict[int, str]], i: int) -> dict[str, Any]:
    return {c: v for c in table.columns if (v := _cell(table, redactions, c, i)) is not None}


def _write_jsonl(table: Table, redactions: dict[str, dict[int, str]], out: io.TextIOBase) -> None:
    line = 1
    for i, position in enumerate(table.positions):
        if position > line:
            out.write("\n" * (position - line))
            line = position
        out.write(json.dumps(_record(table, redactions, i), ensure_ascii=False) + "\n")
        line += 1


def _write_json_array(table: Table, redactions: dict[str, dict[int, str]], out: io.TextIOBase) -> None:
    out.write("[\n")
    for i in range(table.rows):
        out.write((",\n" if i else "") + json.dumps(_record(table, redactions, i), ensure_ascii=False))
    out.write("\n]\n")


def _write_parquet(path: Path, redactions: dict[str, dict[int, str]], out: BinaryIO) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(path, "rb") as fh:
        arrow = pq.read_table(fh)
    for name, changed in redactions.items():
        index = arrow.schema.get_field_index(name)
        column = arrow.column(index)
        values = column.to_pylist()
        for i, text in changed.items():
            values[i] = text
        kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        new_type = kind if pa.types.is_string(kind) or pa.types.is_large_string(kind) else pa.string()
        arrow = arrow.set_column(index, arrow.schema.field(index).with_type(new_type),
                                 pa.array(values, type=new_type))
    pq.write_table(arrow, out)
