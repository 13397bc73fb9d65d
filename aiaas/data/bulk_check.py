"""The check of a CSV or JSONL upload a block of text at a time: the same result as streaming.py's
record-by-record pass, at C speed.

The record-by-record pass costs Python bytecode per line, per cell and per regex search: about
2-5 MB/s on one core, so a gigabyte took minutes. Here a block of whole lines (BLOCK_CHARS
characters) is split, parsed (csv.reader, or the json module's C scanner, over the whole list of
lines) and checked in bulk: lengths, widths, blank rows, the read limits' running totals. The PII
pre-check runs once per block: `_CANDIDATE` over the block's string cells joined by newlines finds
every cell in which `pii.might_contain_pii` could succeed (a superset: each of its branches needs
an "@", a ":" or a digit, and _CANDIDATE asks for one of those with a little of what follows), and
only the rows holding such a cell go through `PiiTally.row`, exactly as the record pass feeds them.
Every other row is counted (`PiiTally.skip`): the report is the same, value for value.

This pass never words a file's error. When a block holds anything its bulk checks do not cover
exactly (a record over several lines, a NUL, a limit reached, a BOM inside the text, a line that is
not one flat JSON object, bytes that do not decode, ...), it raises NotSimple and the caller runs the
record-by-record pass from the start, which finds the error (or the result) exactly as before.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import re
from bisect import bisect_right
from collections.abc import Callable, Iterator
from itertools import accumulate, chain, count, repeat
from operator import add, is_not
from typing import Any, cast

from aiaas.core.errors import AiaasError
from aiaas.core.gc_pause import gc_paused
from aiaas.data.csv_reader import _csv_header
from aiaas.data.formats import Detected
from aiaas.data.json_reader import JsonSchema
from aiaas.data.limits import Budget
from aiaas.data.pii_files import PiiTally

Source = Callable[[], Iterator[bytes]]
BLOCK_CHARS = 64 * 1024  # text per block: bounds what a block holds (~1 MB) and each GIL hold (ms)

# One character that every match of pii._MAYBE_PII needs ("@", ":", "+" or a digit), with enough of
# what follows that a letter-free digit is not a candidate: a superset of its matches, cell by cell
# (nothing here reads past a newline, the separator of the joined cells). Led by a character set,
# so the regex engine skips the other characters in C.
_CANDIDATE_PATTERN = r"[@:+\d](?:(?<=[@:])|(?=\d)|(?=\.\d)|(?=\)?[ .\-]\d{3})|(?=[ \-]\d))"
_CANDIDATE = re.compile(_CANDIDATE_PATTERN)
# The same for ASCII text, where \d is [0-9] (twice as fast: no Unicode category lookup per character).
_CANDIDATE_ASCII = re.compile(r"[@:+0-9](?:(?<=[@:])|(?=[0-9])|(?=\.[0-9])|(?=\)?[ .\-][0-9]{3})|(?=[ \-][0-9]))")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")  # a lone one would not encode: record pass
_FLAT = frozenset({str, int, float, bool, type(None)})


class NotSimple(Exception):
    """This file needs the record-by-record pass (streaming.py) for an exact answer."""


def _blocks(source: Source, encoding: str, *, max_carry: int) -> Iterator[str]:
    """The decoded text in blocks of whole lines of about BLOCK_CHARS (cut after a "\n", so a "\r\n"
    is never split)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    pieces: list[str] = []
    held = 0
    chunks = source()
    with contextlib.ExitStack() as stack:
        if (close := getattr(chunks, "close", None)) is not None:
            stack.callback(close)  # a generator's cleanup (open files, decryptors) runs now
        try:
            for chunk in chunks:
                piece = decoder.decode(chunk)
                pieces.append(piece)
                held += len(piece)
                if held < BLOCK_CHARS:
                    continue
                text = "".join(pieces)
                yield from _whole_lines(text, (start := [0]))
                if len(text) - start[0] > max_carry:
                    raise NotSimple  # no "\n" for this long: "\r" line ends, or one huge line
                pieces = [text[start[0]:]]
                held = len(pieces[0])
            pieces.append(decoder.decode(b"", final=True))
        except UnicodeDecodeError:
            raise NotSimple from None
    if tail := "".join(pieces):
        yield tail


def _whole_lines(text: str, start: list[int]) -> Iterator[str]:
    """Blocks of `text` from start[0] on, each ending after a "\n", while BLOCK_CHARS remain;
    start[0] is left where the rest (the carry) begins."""
    while len(text) - start[0] >= BLOCK_CHARS:
        cut = text.rfind("\n", start[0], start[0] + BLOCK_CHARS) + 1 or text.find("\n", start[0] + BLOCK_CHARS) + 1
        if not cut:
            return
        yield text[start[0]:cut]
        start[0] = cut


def _candidates(texts: list[str]) -> list[int]:
    """Indices of the strings in which pii.might_contain_pii may succeed (sorted, each once)."""
    joined = "\n".join(texts)
    pattern = _CANDIDATE_ASCII if joined.isascii() else _CANDIDATE
    starts = [m.start() for m in pattern.finditer(joined)]
    if not starts:
        return []
    # ends[k]: where string k ends in `joined` (its length, plus one newline per string before it).
    ends = list(map(add, accumulate(map(len, texts)), count()))
    found: list[int] = []
    for p in starts:
        k = bisect_right(ends, p)
        if not found or found[-1] != k:
            found.append(k)
    return found


def _lines(block: str, limit: int) -> list[str]:
    """The block's lines as the record pass reads them (io's newline="": "\\n", "\\r\\n" or "\\r")."""
    lines = io.StringIO(block, newline="").readlines()
    if max(map(len, lines)) > limit:
        raise NotSimple  # a record over the character limit: the record pass words it
    return lines


# --- CSV ------------------------------------------------------------------------------------------


class _CsvState:
    def __init__(self, detected: Detected, param: str, budget: Budget, tally: PiiTally | None) -> None:
        self.delimiter = detected.delimiter
        self.param = param
        self.budget = budget
        self.tally = tally
        self.header: list[str] | None = None
        self.rows = 0
        self.line = 0  # physical lines before the current block


def csv_pass(source: Source, encoding: str, detected: Detected, param: str, budget: Budget,
             scan: bool) -> tuple[int, list[str], PiiTally | None]:
    """(data rows, columns, PII tally) of a CSV text, as streaming._csv_pass finds them; or NotSimple."""
    limits = budget.limits
    if csv.field_size_limit() <= limits.max_cell_chars:
        csv.field_size_limit(limits.max_cell_chars + 1)  # as CsvRecords sets it
    state = _CsvState(detected, param, budget, PiiTally("line") if scan else None)
    for block in _blocks(source, encoding, max_carry=BLOCK_CHARS + limits.max_record_chars):
        if "\x00" in block:
            raise NotSimple
        _csv_block(state, _lines(block, limits.max_record_chars))
    if state.header is None:
        raise NotSimple  # an empty file
    return state.rows, state.header, state.tally


def _csv_block(state: _CsvState, lines: list[str]) -> None:
    limits = state.budget.limits
    reader = csv.reader(lines, delimiter=state.delimiter, strict=True)
    try:
        rows = list(reader)
    except csv.Error:
        raise NotSimple from None
    if reader.line_num != len(lines) or len(rows) != len(lines):
        raise NotSimple  # a quoted record over several lines
    joined = list(map("".join, rows))
    at: list[int] | None = None  # the kept rows' indices in the block, when blank rows were dropped
    if not all(map(str.strip, joined)):  # blank lines, rows such as ",,": skipped, as the record pass does
        at = [i for i, text in enumerate(joined) if text.strip()]
        rows, joined = [rows[i] for i in at], [joined[i] for i in at]
    first = 0
    if state.header is None and rows:
        if max(map(len, rows[0])) > limits.max_cell_chars:
            raise NotSimple
        try:
            state.header = _csv_header(rows[0], state.line + 1 + (at[0] if at else 0), state.param, limits)
        except AiaasError:
            raise NotSimple from None
        first = 1
    width = len(state.header or ())
    data = rows[first:]
    if data:
        texts = joined[first:] if first else joined
        if set(map(len, data)) != {width} or max(map(len, texts)) > limits.max_cell_chars:
            raise NotSimple
        state.rows += len(data)
        if state.rows > limits.max_rows:
            raise NotSimple
        try:
            state.budget.add(width * len(data), sum(map(len, texts)))
        except AiaasError:
            raise NotSimple from None
        if state.tally is not None:
            lines_of = [state.line + 1 + (at[i] if at else i) for i in range(first, len(rows))] if at else None
            _tally_csv(state.tally, state.header or [], data, lines_of, state.line + 1 + first)
    state.line += len(lines)


def _tally_csv(tally: PiiTally, header: list[str], data: list[list[str]], lines_of: list[int] | None,
               first_line: int) -> None:
    """Feed the rows with a PII candidate to the tally as the record pass does; count the others."""
    cells = list(chain.from_iterable(data))
    nonempty = len(cells) - cells.count("")  # the record pass hands an empty cell over as None
    width = len(header)
    hit_rows = sorted({k // width for k in _candidates(cells)})
    for i in hit_rows:
        row = data[i]
        nonempty -= sum(1 for cell in row if cell)
        line = lines_of[i] if lines_of is not None else first_line + i
        tally.row(line, ((j, header[j], cell or None) for j, cell in enumerate(row)))
    tally.skip(len(data) - len(hit_rows), nonempty)


# --- JSONL ----------------------------------------------------------------------------------------


def jsonl_pass(source: Source, encoding: str, param: str, budget: Budget,
               scan: bool) -> tuple[int, list[str], PiiTally | None]:
    """(rows, columns, PII tally) of a JSONL text, as streaming._jsonl_pass finds them; or NotSimple.

    Only records that are flat JSON objects (strings, numbers, booleans, nulls), one a line starting
    with "{", take this pass."""
    limits = budget.limits
    schema = JsonSchema(param, budget)
    index: dict[str, int] = {}
    tally = PiiTally("line") if scan else None
    line = 0
    for block in _blocks(source, encoding, max_carry=BLOCK_CHARS + limits.max_record_chars):
        if "\ufeff" in block or ("\\u" in block and _SURROGATE_ESCAPE.search(block)):
            raise NotSimple
        lines = _lines(block, limits.max_record_chars)
        at: list[int] | None = None
        records = lines
        if not all(map(str.strip, lines)):  # blank lines are skipped (and still counted as lines)
            at = [i for i, text in enumerate(lines) if text.strip()]
            records = [lines[i] for i in at]
        objs = _parse_flat(records)
        if objs:
            values, texts = _values(objs)
            _jsonl_limits(schema, index, objs, texts)
            if tally is not None:
                positions = [line + 1 + i for i in at] if at is not None else None
                _tally_jsonl(tally, index, objs, (values, texts), positions, line + 1)
        line += len(lines)
    return schema.rows, schema.names, tally


def _parse_flat(records: list[str]) -> list[dict[str, Any]]:
    """Each line's object, as json.loads parses it, when every line is exactly one flat object.

    The lines are parsed as one JSON array (one C call). Each line starts with "{", and no string
    runs over a line end (JSON refuses raw control characters), so each line starts a top-level
    element; as many elements as lines, all objects, and all flat (checked by _values: nothing spans
    two lines without a nested list) means each line held exactly one object and only whitespace
    after it (anything else, a comma or a bracket, breaks the array or its count)."""
    if not records:
        return []
    if not all(map(str.startswith, records, repeat("{"))):
        raise NotSimple
    try:
        with gc_paused():  # acyclic; see core/gc_pause.py
            objs = json.loads("[" + ",".join(records) + "]")
    except (ValueError, RecursionError):
        raise NotSimple from None
    if len(objs) != len(records) or set(map(type, objs)) != {dict}:
        raise NotSimple
    return cast(list[dict[str, Any]], objs)


def _values(objs: list[dict[str, Any]]) -> tuple[list[Any], list[str]]:
    """Every value of the records in order, and the same list with non-strings as "" (never a candidate)."""
    values = list(chain.from_iterable(map(dict.values, objs)))
    types = set(map(type, values))
    if not types <= _FLAT:
        raise NotSimple  # nested lists and objects: the record pass measures them
    texts = values if types <= {str} else [v if type(v) is str else "" for v in values]
    return values, texts


def _jsonl_limits(schema: JsonSchema, index: dict[str, int], objs: list[dict[str, Any]], texts: list[str]) -> None:
    """JsonSchema.check for a block of flat records at once (cells, characters, columns, rows)."""
    limits = schema.budget.limits
    keys = list(chain.from_iterable(objs))
    if texts and max(map(len, texts)) > limits.max_cell_chars:
        raise NotSimple
    if schema.rows + len(objs) > limits.max_rows:
        raise NotSimple
    new = [key for key in dict.fromkeys(keys) if key not in schema.seen]
    if len(schema.seen) + len(new) > limits.max_columns:
        raise NotSimple
    try:
        # A flat record's characters (keys and strings) are no more than its line's: within the limit.
        schema.budget.add(len(keys), sum(map(len, keys)) + sum(map(len, texts)))
    except AiaasError:
        raise NotSimple from None
    schema.rows += len(objs)
    for key in new:
        schema.seen.add(key)
        schema.names.append(key)
        index[key] = len(index)


def _tally_jsonl(tally: PiiTally, index: dict[str, int], objs: list[dict[str, Any]],
                 values_texts: tuple[list[Any], list[str]], positions: list[int] | None, first_line: int) -> None:
    """Feed the records with a PII candidate to the tally as the record pass does; count the others."""
    values, texts = values_texts
    strings = len(values) - sum(map(is_not, map(type, values), repeat(str)))
    ends = list(accumulate(map(len, objs)))  # where each record's values end in `values`
    hit_records = sorted({bisect_right(ends, k) for k in _candidates(texts)})
    for i in hit_records:
        obj = objs[i]
        strings -= sum(1 for value in obj.values() if isinstance(value, str))
        line = positions[i] if positions is not None else first_line + i
        tally.row(line, ((index[k], k, v) for k, v in obj.items()))
    tally.skip(len(objs) - len(hit_records), strings)
