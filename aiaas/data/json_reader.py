"""JSONL and JSON arrays of objects into a Table. Every object is checked against the read limits, and
a JSON array is counted before it is parsed (json.loads makes an object of every value)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import IO, Any

from aiaas.core.errors import InvalidFile
from aiaas.core.gc_pause import gc_paused
from aiaas.data.formats import subject
from aiaas.data.limits import (
    Budget,
    ReadLimits,
    cell_too_large,
    row_too_large,
    too_large_decoded,
    too_many_columns,
    too_many_rows,
)
from aiaas.data.table import Table

# A JSON token (a string literal, a bracket or a comma), to count a JSON text's values without parsing
# it. Linear: possessive (no backtracking into a string), and an unterminated string runs to the end,
# so no start is tried twice.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)|[\[\]{},]', re.DOTALL)


def _loads(text: str, where: str, param: str) -> Any:
    """json.loads that turns every way JSON can hurt us into a line-numbered InvalidFile:
    nesting too deep, integers too long to convert, and lone surrogate escapes (not UTF-8)."""
    try:
        with gc_paused():  # an acyclic tree of up to a record's limit of values: see core/gc_pause.py
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
        nested, chars, longest = _measure_record(obj, limits.max_columns)
        if nested > limits.max_columns:  # counting stopped there: a record with 600k empty lists costs no more
            raise row_too_large(f"more than {limits.max_columns} nested values", where, limits, self.param)
        if longest > limits.max_cell_chars:
            raise cell_too_large(longest, where, limits, self.param)
        if chars > limits.max_record_chars:
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


def _measure_record(obj: dict[str, Any], max_nested: int) -> tuple[int, int, int]:
    """(values nested inside its cells, characters of its keys and strings, longest string) of a record; the
    walk stops as soon as more than `max_nested` values are nested (the record is refused then, whatever else)."""
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
            if nested > max_nested:
                break
            stack.extend(value)
        elif isinstance(value, dict):
            nested += len(value)
            if nested > max_nested:
                break
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


def parse_jsonl(fh: IO[str], param: str, keep: set[str] | None, budget: Budget) -> Table:
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


def parse_json_array(fh: IO[str], param: str, keep: set[str] | None, budget: Budget) -> Table:
    text = fh.read()
    _count_json_values(text, budget)
    try:
        with gc_paused():
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
