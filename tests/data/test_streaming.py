"""The streaming check (aiaas/data/streaming.py) agrees with the in-memory one: same summary, same PII
report, same redacted bytes, same errors; and its memory does not grow with the file."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import pytest

from aiaas.core.errors import AiaasError
from aiaas.data.limits import ReadLimits
from aiaas.data.pii_files import scan_table, write_redacted
from aiaas.data.readers import load_table
from aiaas.data.streaming import check_stream, detect_source, redacted_stream, streamable
from tests.api.test_pii_upload import FORMATS, seeded


def source_of(content: bytes, chunk: int = 4096):
    def source():
        for i in range(0, len(content), chunk):
            yield content[i:i + chunk]
    return source


def in_memory(path: Path, name: str):
    table = load_table(path, filename=name)
    scan = scan_table(table, redact=True)
    out = io.BytesIO()
    write_redacted(path, filename=name, table=table, redactions=scan.redactions, out=out)
    return table, scan, out.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_streaming_agrees_with_the_table_path(tmp_path, fmt, chunk):
    s = seeded(fmt)
    content = s.content if isinstance(s.content, bytes) else s.content.encode()
    path = tmp_path / FORMATS[fmt]
    path.write_bytes(content)
    table, scan, redacted = in_memory(path, FORMATS[fmt])
    source = source_of(content, chunk)
    check = check_stream(source, size=len(content), filename=FORMATS[fmt], limits=ReadLimits())
    assert check.summary() == {"format": table.format, "encoding": "utf-8", "rows": table.rows,
                               "columns": table.columns}
    assert check.tally is not None and check.tally.report(redact=True) == scan.report
    assert scan.report["findings"] > 0
    streamed = b"".join(redacted_stream(source, check, size=len(content), limits=ReadLimits()))
    assert streamed == redacted


def test_csv_with_blank_lines_crlf_semicolons_and_gbk(tmp_path):
    text = "名字;说明\r\n\r\n张三;邮箱 a.b@example.com\r\n\r\n\r\n李四;电话 13812345678\r\n"
    content = text.encode("gb18030")
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    table, scan, redacted = in_memory(path, "x.csv")
    source = source_of(content, 5)
    check = check_stream(source, size=len(content), filename="x.csv", limits=ReadLimits())
    assert check.encoding == table.encoding == "gb18030"
    assert check.tally is not None and check.tally.report(redact=True) == scan.report
    assert b"".join(redacted_stream(source, check, size=len(content), limits=ReadLimits())) == redacted


BAD = [
    ("a.csv", b"text,label\n\"open quote,x\n", "invalid_file"),
    ("a.csv", b"text,label\n", "invalid_file"),
    ("a.csv", b"text,label\nx,y,z\n", "invalid_file"),
    ("a.csv", b"text,label\nx\x00y,z\n", "invalid_file"),
    ("a.jsonl", b'{"text": "x"}\n[1, 2]\n', "invalid_file"),
    ("a.jsonl", b'{"text": "x"\n', "invalid_file"),
    ("a.csv", b"text,label\n" + b"a,b\n" * 30, "too_many_rows"),
    ("a.csv", b"text,label\n" + b"x" * 300 + b",b\n", "cell_too_large"),
    ("a.jsonl", b'{"a": [' + b"1," * 200 + b'1]}\n', "row_too_large"),
]


@pytest.mark.parametrize(("name", "content", "code"), BAD)
def test_streaming_errors_match_the_table_path(tmp_path, name, content, code):
    limits = ReadLimits(max_rows=20, max_cell_chars=200, max_columns=100)
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AiaasError) as expected:
        load_table(path, filename=name, limits=limits)
    with pytest.raises(AiaasError) as got:
        check_stream(source_of(content, 3), size=len(content), filename=name, limits=limits)
    assert (got.value.code, got.value.message) == (expected.value.code, expected.value.message)
    assert got.value.code == code


def test_parquet_and_json_arrays_are_not_streamed():
    assert not streamable(detect_source(source_of(b'[{"a": 1}]'), filename="a.json"))
    assert streamable(detect_source(source_of(b'{"a": 1}\n'), filename="a.json"))


@pytest.mark.slow
def test_memory_stays_flat_as_the_file_grows():
    def rows(n):
        def source():
            yield b"text,label\n"
            lines = (b"a plain sentence about order %d,pos\n", b"mail me at someone@example.com about order %d,pos\n")
            batch = 2000
            for i in range(0, n, batch):
                yield b"".join(lines[j % 50 == 0] % j for j in range(i, min(i + batch, n)))
        return source

    peaks = []
    for n in (2_000, 20_000):
        tracemalloc.start()
        check = check_stream(rows(n), size=60 * n, filename="a.csv", limits=ReadLimits())
        for _ in redacted_stream(rows(n), check, size=60 * n, limits=ReadLimits()):
            pass
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert check.rows == n and check.tally is not None and check.tally.found == n // 50
    assert peaks[1] < 1.5 * peaks[0] + 512 * 1024, peaks  # 10x the rows, not 10x the memory
