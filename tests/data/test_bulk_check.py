"""The bulk check (aiaas/data/bulk_check.py) answers exactly as the record-by-record pass: same summary,
same PII report, same error; it hands over (NotSimple) whatever it cannot decide exactly, and its PII
pre-check lets through every cell in which the exact pre-check could succeed."""

from __future__ import annotations

import json
import random

import pytest

from aiaas.core.errors import AiaasError
from aiaas.data import bulk_check, streaming
from aiaas.data.limits import Budget, ReadLimits
from aiaas.data.pii import might_contain_pii
from aiaas.data.streaming import check_stream, detect_source
from tests.api.test_pii_upload import FORMATS, seeded
from tests.data.test_streaming import source_of

LIMITS = ReadLimits(max_rows=40, max_cell_chars=200, max_columns=6, max_record_chars=400, max_cells=150)


def _outcome(content: bytes, name: str, limits: ReadLimits) -> tuple:
    try:
        check = check_stream(source_of(content, 13), size=len(content), filename=name, limits=limits)
    except AiaasError as exc:
        return ("error", exc.code, exc.message)
    assert check.tally is not None
    return ("ok", check.summary(), check.tally.report(redact=False))


def _record_pass_only(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise bulk_check.NotSimple

    monkeypatch.setattr(bulk_check, "csv_pass", refuse)
    monkeypatch.setattr(bulk_check, "jsonl_pass", refuse)


def _bulk_answers(content: bytes, name: str, limits: ReadLimits) -> bool:
    """True when the bulk pass answered by itself (no NotSimple)."""
    source = source_of(content, 13)
    detected = detect_source(source, filename=name)
    budget = Budget(limits, len(content), "file")
    try:
        if detected.kind == "csv":
            bulk_check.csv_pass(source, detected.encodings[0], detected, "file", budget, True)
        else:
            bulk_check.jsonl_pass(source, detected.encodings[0], "file", budget, True)
    except bulk_check.NotSimple:
        return False
    return True


PII_ROWS = ["mail a.b@example.com", "call +44 20 7946 0958", "card 4111 1111 1111 1111", "ip 10.0.0.1",
            "iban DE89 3704 0044 0532 0130 00", "手机13812345678", "order 12345678901", "plain words", "",
            "v6 2001:db8::1", "٣٤٥ digits", "(415) 555-2671", "no 1"]
CSV = {
    "plain": "text,label\n" + "".join(f'"{t}",l{i % 3}\n' for i, t in enumerate(PII_ROWS * 3)),
    "crlf and blank lines": "text,label\r\n\r\n" + "".join(f"{t},x\r\n" + ("\r\n" if i % 4 == 0 else "")
                                                            for i, t in enumerate(PII_ROWS)),
    "empty cells and ,, rows": "a,b,c\n1,,x@y.io\n,,\n , ,\n,2,\n",
    "tabs": "text\tlabel\n" + "".join(f"{t}\tz\n" for t in PII_ROWS),
    "no final newline": "text,label\nhello,a\nmail me x@y.io,b",
    "blank lines first": "\n\n text , label \nx,1\n",
    "multi-line record": 'text,label\n"two\nlines a@b.io",x\nmore,y\n',
    "bare CR": "text,label\rx,1\ry@z.io,2\r",
    "BOM": "\ufefftext,label\nx,1\n",
    "NUL": "text,label\nx\x00,1\n",
    "wrong width": "text,label\nx,1\ny\n",
    "duplicate header": "a,a\n1,2\n",
    "cell too large": "text,label\n" + "x" * 201 + ",1\n",
    "record too large": "text,label\n" + ("y" * 150 + ",") * 3 + "1\n",
    "too many rows": "text,label\n" + "a,b\n" * 41,
    "too many cells": "a,b,c,d,e\n" + "1,2,3,4,5\n" * 31,
    "unclosed quote": 'text,label\n"open,x\n',
    "quote after quote": 'text,label\n"a"b,x\n',
    "header only": "text,label\n",
    "empty": "",
}
JSONL = {
    "plain": "".join(json.dumps({"text": t, "label": i % 3}) + "\n" for i, t in enumerate(PII_ROWS * 3)),
    "mixed types and nulls": '{"a": "x@y.io", "b": 1.5, "c": null, "d": true}\n{"b": 2, "e": "+33 1 23 45 67 89"}\n',
    "escapes": '{"t": "a\\u0040b.com"}\n{"t": "line\\nbreak 10.1.2.3"}\n{"t": "\\u00e9t\\u00e9"}\n',
    "blank lines": '\n{"t": "x"}\n\n  \n{"t": "y@z.io"}\n',
    "nested": '{"t": "x", "tags": ["a", "b"]}\n{"t": {"inner": "c@d.io"}}\n',
    "two objects on a line": '{"t": "x"}, {"t": "y"}\n{"t": "z"}\n',
    "object over two lines": '{"t": [\n"x"]}\n',
    "trailing garbage": '{"t": "x"} x\n',
    "closing bracket": '{"t": "x"}]\n{"t": "y"}\n',
    "leading space": ' {"t": "x"}\n',
    "not an object": '{"t": "x"}\n[1, 2]\n',
    "invalid": '{"t": "x"\n',
    "BOM": '\ufeff{"t": "x"}\n',
    "lone surrogate": '{"t": "\\ud800"}\n',
    "pair of surrogates": '{"t": "\\ud83d\\ude00 a@b.io"}\n',
    "duplicate keys": '{"t": "x", "t": "y@z.io"}\n',
    "too many columns": '{"a": 1, "b": 2, "c": 3, "d": 4}\n{"e": 5, "f": 6, "g": 7}\n',
    "cell too large": '{"t": "' + "x" * 201 + '"}\n',
    "too many rows": '{"t": "x"}\n' * 41,
    "empty": "",
    "huge integer": '{"n": ' + "9" * 5000 + "}\n",
}
CASES = [(f"csv: {k}", "a.csv", v.encode()) for k, v in CSV.items()] + \
        [(f"jsonl: {k}", "a.jsonl", v.encode()) for k, v in JSONL.items()]


@pytest.mark.parametrize("block", [16, 1024])
@pytest.mark.parametrize(("case", "name", "content"), CASES, ids=[c[0] for c in CASES])
def test_bulk_and_record_pass_agree(monkeypatch, case, name, content, block):
    monkeypatch.setattr(bulk_check, "BLOCK_CHARS", block)
    got = _outcome(content, name, LIMITS)
    with monkeypatch.context() as m:
        _record_pass_only(m)
        expected = _outcome(content, name, LIMITS)
    assert got == expected


SIMPLE = ["csv: plain", "csv: crlf and blank lines", "csv: empty cells and ,, rows", "csv: tabs",
          "csv: no final newline", "csv: blank lines first", "jsonl: plain", "jsonl: mixed types and nulls",
          "jsonl: escapes", "jsonl: blank lines", "jsonl: duplicate keys"]


@pytest.mark.parametrize("case", SIMPLE)
def test_simple_files_take_the_bulk_pass(monkeypatch, case):
    monkeypatch.setattr(bulk_check, "BLOCK_CHARS", 16)
    name, content = next((n, c) for k, n, c in CASES if k == case)
    assert _bulk_answers(content, name, LIMITS)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_seeded_pii_file_agrees(monkeypatch, fmt):
    s = seeded(fmt)
    content = s.content if isinstance(s.content, bytes) else s.content.encode()
    monkeypatch.setattr(bulk_check, "BLOCK_CHARS", 256)
    # The seeded CSV has a quoted record over two lines: the record pass checks it.
    assert _bulk_answers(content, FORMATS[fmt], ReadLimits()) == (fmt == "jsonl")
    got = _outcome(content, FORMATS[fmt], ReadLimits())
    _record_pass_only(monkeypatch)
    assert got == _outcome(content, FORMATS[fmt], ReadLimits())
    assert got[2]["findings"] > 0


def test_candidate_precheck_is_a_superset_of_might_contain_pii():
    rng = random.Random(5)
    alphabet = "aZ09 .-+@:()\n\t_٣x"
    for _ in range(40_000):
        cell = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        if might_contain_pii(cell):
            assert bulk_check._CANDIDATE.search(cell), cell
            if cell.isascii():
                assert bulk_check._CANDIDATE_ASCII.search(cell), cell
    cells = ["plain", "x@y.io", "intent_3", "", "ab12", "1-800", "٣.٣"]
    assert bulk_check._candidates(cells) == [i for i, c in enumerate(cells) if might_contain_pii(c)]


def test_streaming_uses_the_bulk_pass(monkeypatch):
    calls = []
    real = bulk_check.csv_pass
    monkeypatch.setattr(bulk_check, "csv_pass", lambda *a, **k: calls.append(1) or real(*a, **k))
    content = CSV["plain"].encode()
    check = streaming.check_stream(source_of(content), size=len(content), filename="a.csv", limits=ReadLimits())
    assert calls and check.rows == len(PII_ROWS) * 3
