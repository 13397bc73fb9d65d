"""Check, scan and redact a CSV or JSONL upload as it streams past, one record in memory at a time.

The in-memory path (readers.load_table, pii_files.scan_table / write_redacted) builds the whole
table: fine for the sizes a request can check while the client waits, not for a gigabyte. Here the
file is a `Source`, a function that starts a fresh pass over its bytes (the upload decrypted frame
by frame from the blob store), so each pass holds one record, one decoded buffer and the report,
whatever the file's size. The same readers (CsvRecords, jsonl_records) and the same limits apply,
so a file gets the same errors and the same summary either way; tests/data/test_streaming.py
checks that the two paths agree.

Parquet and JSON-array files are not streamed here (`streamable()` says which are).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from aiaas.core.errors import InvalidFile
from aiaas.core.streams import ChunkReader
from aiaas.data import bulk_check
from aiaas.data.csv_reader import CsvRecords, check_nul
from aiaas.data.formats import SAMPLE_BYTES, Detected, decode_error, detect_sample, subject
from aiaas.data.json_reader import JsonSchema, jsonl_records
from aiaas.data.limits import Budget, ReadLimits
from aiaas.data.pii_files import PiiTally

Source = Callable[[], Iterator[bytes]]
READ_BUFFER = 1024 * 1024
WRITE_BATCH = 256 * 1024  # characters of redacted output gathered before they are encoded and handed on


@dataclass
class StreamCheck:
    """What one pass found: the file's summary fields and, when scanned, the PII tally."""

    detected: Detected
    encoding: str
    rows: int
    columns: list[str]
    tally: PiiTally | None

    def summary(self) -> dict[str, Any]:
        return {"format": "csv" if self.detected.kind == "csv" else "jsonl", "encoding": self.encoding,
                "rows": self.rows, "columns": self.columns}


def sample_of(source: Source) -> bytes:
    """The file's first SAMPLE_BYTES bytes (what format detection looks at)."""
    buf = bytearray()
    chunks = source()
    try:
        for chunk in chunks:
            buf += chunk
            if len(buf) >= SAMPLE_BYTES:
                break
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return bytes(buf[:SAMPLE_BYTES])


def detect_source(source: Source, *, filename: str, param: str = "file") -> Detected:
    return detect_sample(sample_of(source), filename=filename, param=param)


def streamable(detected: Detected) -> bool:
    return detected.kind in ("csv", "jsonl")


@contextlib.contextmanager
def _text(source: Source, encoding: str) -> Iterator[IO[str]]:
    raw = ChunkReader(source())
    with io.TextIOWrapper(io.BufferedReader(raw, buffer_size=READ_BUFFER), encoding=encoding, newline="") as fh:
        yield fh


def check_stream(source: Source, *, size: int, filename: str, limits: ReadLimits, scan: bool = True,
                 param: str = "file", detected: Detected | None = None) -> StreamCheck:
    """One pass over a CSV or JSONL file: its records checked against `limits`, and the PII scan's tally.

    Raises the errors load_table raises for the same file (InvalidFile, DecodedLimitExceeded)."""
    detected = detected or detect_source(source, filename=filename, param=param)
    if not streamable(detected):
        raise ValueError(f"{detected.kind} files are not checked as a stream")
    for encoding in detected.encodings:
        try:
            rows, columns, tally = _one_pass(source, encoding, detected, Budget(limits, size, param), scan)
        except UnicodeDecodeError:
            continue
        if rows == 0:
            raise InvalidFile(
                f"{subject(param)} has a header but no data rows; add at least one row below the header."
                if detected.kind == "csv" else f"{subject(param)} has no rows.",
                param=param,
            )
        return StreamCheck(detected, encoding, rows, columns, tally)
    raise decode_error(param)


def _one_pass(source: Source, encoding: str, detected: Detected, budget: Budget,
              scan: bool) -> tuple[int, list[str], PiiTally | None]:
    """The bulk pass (bulk_check.py) when it can answer exactly, else the record-by-record pass."""
    param = budget.param
    try:
        if detected.kind == "csv":
            return bulk_check.csv_pass(source, encoding, detected, param, budget, scan)
        return bulk_check.jsonl_pass(source, encoding, param, budget, scan)
    except bulk_check.NotSimple:
        pass
    budget = Budget(budget.limits, budget.file_bytes, param)  # start the count again
    with _text(source, encoding) as fh:
        if detected.kind == "csv":
            return _csv_pass(fh, detected, param, budget, scan)
        return _jsonl_pass(fh, param, budget, scan)


def _csv_pass(fh: IO[str], detected: Detected, param: str, budget: Budget,
              scan: bool) -> tuple[int, list[str], PiiTally | None]:
    records = CsvRecords(fh, detected.delimiter, param, budget)
    tally = PiiTally("line") if scan else None
    for start, row in records:
        for cell in row:
            if "\x00" in cell:
                check_nul(cell, f"line {start}", param)
        if tally is not None:
            header = records.header or []
            tally.row(start, ((j, header[j], cell or None) for j, cell in enumerate(row)))
    return records.rows, records.header or [], tally


def _jsonl_pass(fh: IO[str], param: str, budget: Budget, scan: bool) -> tuple[int, list[str], PiiTally | None]:
    schema = JsonSchema(param, budget)
    index: dict[str, int] = {}
    tally = PiiTally("line") if scan else None
    for line_no, obj in jsonl_records(fh, param, budget.limits):
        for key in schema.check(obj, f"line {line_no}"):
            index[key] = len(index)
        if tally is not None:
            tally.row(line_no, ((index[k], k, v) for k, v in obj.items()))
    return schema.rows, schema.names, tally


# --- the redacted file, written as it is read ------------------------------------------------------


class _Out:
    """Collects written text and counts line breaks as the csv reader counts them (\\r\\n, \\r or \\n)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pending = 0
        self.lines = 0

    def write(self, s: str) -> int:
        self.lines += s.count("\n") + s.count("\r") - s.count("\r\n")
        self.parts.append(s)
        self.pending += len(s)
        return len(s)

    def take(self, *, at_least: int = WRITE_BATCH) -> bytes | None:
        if self.pending < at_least or not self.parts:
            return None
        out = "".join(self.parts).encode("utf-8")
        self.parts.clear()
        self.pending = 0
        return out


def redacted_stream(source: Source, check: StreamCheck, *, size: int, limits: ReadLimits,
                    param: str = "file") -> Iterator[bytes]:
    """The file again (UTF-8), with every PII value replaced by its placeholder, as write_redacted writes it.

    A second pass: the cells are scanned again rather than remembered, so memory stays flat however
    many there are. `check` is the first pass's result (format, encoding); `size` and `limits` as it had."""
    out = _Out()
    with _text(source, check.encoding) as fh:
        if check.detected.kind == "csv":
            sample = codecs.decode(sample_of(source), check.encoding, errors="ignore")
            ending = "\r\n" if sample.split("\n", 1)[0].endswith("\r") else "\n"
            rows = _redacted_csv(fh, check, ending, Budget(limits, size, param), out)
        else:
            rows = _redacted_jsonl(fh, param, limits, out)
        for _ in rows:
            if (chunk := out.take()) is not None:
                yield chunk
    if (chunk := out.take(at_least=0)) is not None:
        yield chunk


def _redacted_csv(fh: IO[str], check: StreamCheck, ending: str, budget: Budget, out: _Out) -> Iterator[None]:
    records = CsvRecords(fh, check.detected.delimiter, budget.param, budget)
    tally = PiiTally("line")
    writer = csv.writer(out, delimiter=check.detected.delimiter, lineterminator=ending)
    for start, row in records:
        header = records.header or []
        if tally.rows == 0:
            writer.writerow(header)
        changed = tally.row(start, ((j, header[j], cell or None) for j, cell in enumerate(row)), redact=True)
        # Blank lines are skipped when the file is read, so padding keeps every row on its line.
        if start > out.lines + 1:
            out.write(ending * (start - out.lines - 1))
        writer.writerow([changed.get(name, cell) for name, cell in zip(header, row, strict=True)])
        yield None


def _redacted_jsonl(fh: IO[str], param: str, limits: ReadLimits, out: _Out) -> Iterator[None]:
    index: dict[str, int] = {}
    tally = PiiTally("line")
    line = 1
    for position, obj in jsonl_records(fh, param, limits):
        for key in obj:
            index.setdefault(key, len(index))
        changed = tally.row(position, ((index[k], k, v) for k, v in obj.items()), redact=True)
        if position > line:
            out.write("\n" * (position - line))
            line = position
        # Keys in the order the file first used them, nulls left out: as write_redacted writes a record.
        record = {k: changed.get(k, obj[k]) for k in sorted(obj, key=index.__getitem__) if obj[k] is not None}
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        line += 1
        yield None
