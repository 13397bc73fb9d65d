"""Reading uploads: formats, encodings, sniffing, and line-numbered parse errors."""

from __future__ import annotations

import codecs
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aiaas.core.errors import InvalidFile
from aiaas.data import FileSummary, inspect_upload, read_table
from aiaas.data.formats import SAMPLE_BYTES


def _error(path, filename=None, param="file") -> InvalidFile:
    with pytest.raises(InvalidFile) as info:
        read_table(path, filename=filename, param=param)
    assert info.value.param == param
    return info.value


# --- CSV basics --------------------------------------------------------------------------------


def test_csv_cells_stay_strings_and_index_is_the_file_line(write):
    path = write("t.csv", 'text,label\n007,NA\n"two\nlines",null\n\nempty label,\n')
    df = read_table(path)
    assert list(df.columns) == ["text", "label"]
    assert df.index.name == "line"
    assert list(df.index) == [2, 3, 6]
    assert df.loc[2, "text"] == "007"
    assert df.loc[2, "label"] == "NA"
    assert df.loc[3, "text"] == "two\nlines"
    assert df.loc[3, "label"] == "null"
    assert df.loc[6, "label"] is None


def test_crlf_and_lone_cr_line_endings_count_lines(write):
    path = write("t.csv", 'text,label\r\na,1\r\n"x\r\ny",2\rb,3\r\n')
    df = read_table(path)
    assert list(df.index) == [2, 3, 5]
    assert df.loc[3, "text"] == "x\r\ny"


def test_header_names_are_trimmed_and_unnamed_columns_get_a_name(write):
    df = read_table(write("t.csv", ",  text , label\n1,a,b\n"))
    assert list(df.columns) == ["column_1", "text", "label"]


def test_rows_of_empty_cells_are_skipped(write):
    df = read_table(write("t.csv", "text,label\na,b\n,\n  \nc,d\n"))
    assert list(df.index) == [2, 5]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("t.tsv", "text\tlabel\na, b\tx\n", ["a, b", "x"]),
        ("t.csv", "text;label\na, b;x\n", ["a, b", "x"]),
        ("t.csv", "text\tlabel\na, b\tx\n", ["a, b", "x"]),
    ],
)
def test_delimiter_from_extension_or_header(write, name, content, expected):
    df = read_table(write(name, content))
    assert list(df.iloc[0]) == expected


# --- encodings ---------------------------------------------------------------------------------


def test_utf8_bom_is_not_part_of_the_first_column(write):
    path = write("t.csv", codecs.BOM_UTF8 + "text,label\nhéllo,a\n".encode())
    summary = inspect_upload(path, filename="t.csv")
    assert summary.columns == ["text", "label"]
    assert summary.encoding == "utf-8-sig"
    assert read_table(path).iloc[0]["text"] == "héllo"


def test_gbk_chinese_spreadsheet_is_decoded(write):
    content = "文本,标签\n我想退款，订单号是12345,退款\n快递三天了还没到,物流\n"
    path = write("zh.csv", content, encoding="gbk")
    df = read_table(path)
    assert list(df.columns) == ["文本", "标签"]
    assert list(df["文本"]) == ["我想退款，订单号是12345", "快递三天了还没到"]
    assert inspect_upload(path, filename="zh.csv").encoding == "gb18030"


def test_gbk_after_a_long_ascii_start_falls_back_mid_file(write):
    ascii_rows = "".join(f"row {i} is plain ascii text,en\n" for i in range(SAMPLE_BYTES // 20))
    path = write("zh.csv", "text,label\n" + ascii_rows + "退款太慢了,zh\n", encoding="gbk")
    df = read_table(path)
    assert df.iloc[-1]["text"] == "退款太慢了"
    assert inspect_upload(path, filename="zh.csv").encoding == "gb18030"


def test_undecodable_bytes_ask_for_utf8(write):
    path = write("t.csv", b"text,label\ncaf\xe9 cr\xe8me\n,x\n")
    err = _error(path, "t.csv", param="training_file")
    assert err.message.startswith("training_file is not readable text")
    assert "could not decode it as UTF-8 or GB18030" in err.message
    assert "save the file as UTF-8" in err.message


def test_utf8_file_damaged_after_the_sample_is_not_read_as_gb18030(write):
    rows = "".join(f"第{i}行是正常的UTF-8文本,zh\n" for i in range(SAMPLE_BYTES // 20))
    path = write("t.csv", ("text,label\n" + rows).encode() + b"bad \xff byte,zh\n")
    assert "could not decode it as UTF-8" in _error(path).message


def test_utf16_with_bom_excel_unicode_text(write):
    path = write("t.txt", "text\tlabel\nhello there\tgreet\n".encode("utf-16"))
    df = read_table(path)
    assert list(df.iloc[0]) == ["hello there", "greet"]


# --- not a table at all ------------------------------------------------------------------------


def test_nul_bytes_are_refused_as_binary(write):
    err = _error(write("t.csv", b"text,label\n\x00\x01\x02\x00binary"))
    assert "is not a CSV, JSONL or Parquet file" in err.message


def test_random_bytes_are_refused_as_binary(write):
    err = _error(write("blob", random.Random(0).randbytes(4096)))
    assert "is not a CSV, JSONL or Parquet file" in err.message


def test_excel_workbook_gets_a_hint(write):
    err = _error(write("book.xlsx", b"PK\x03\x04" + b"\x14\x00" * 50))
    assert "Excel" in err.message and "CSV UTF-8" in err.message


def test_parquet_extension_without_parquet_content(write):
    err = _error(write("t.parquet", "text,label\na,b\n"), "t.parquet")
    assert "not a Parquet file" in err.message


# --- CSV errors with exact line numbers --------------------------------------------------------


def test_too_many_fields_names_the_physical_line_after_a_multiline_cell(write):
    path = write("t.csv", 'text,label\n"multi\nline",a\nok,b\n\ntoo,many,fields\n')
    err = _error(path)
    assert err.message.startswith("line 6: expected 2 fields, found 3")
    assert "double quotes" in err.message


def test_too_few_fields(write):
    err = _error(write("t.csv", "text,label\nfine,a\njust text\n"))
    assert err.message.startswith("line 3: expected 2 fields, found 1")


def test_unclosed_quote_at_the_end_names_where_it_opened(write):
    err = _error(write("t.csv", 'text,label\nok,a\n"never closed,b\nmore,c\n'))
    assert err.message.startswith("line 3: a quoted cell is never closed")


def test_unclosed_quote_swallowing_lines_is_reported_at_its_start(write):
    err = _error(write("t.csv", 'text,label\nok,a\n"oops,b\nx,c\ny",d,e\n'))
    assert err.message.startswith("line 3: expected 2 fields, found 3")
    assert "runs from line 3 to line 5" in err.message


def test_text_after_a_closing_quote(write):
    err = _error(write("t.csv", 'text,label\nok,a\n"quoted"tail,b\n'))
    assert err.message.startswith("line 3: unexpected character after a closing quote")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(write, content):
    err = _error(write("t.csv", content))
    assert "is empty" in err.message and "header row" in err.message


def test_header_only(write):
    err = _error(write("t.csv", "text,label\n\n"))
    assert "has a header but no data rows" in err.message


def test_duplicate_header_names(write):
    err = _error(write("t.csv", "\ntext,text\na,b\n"))
    assert err.message.startswith("line 2: the header names column 'text' more than once")


# --- JSONL and JSON ----------------------------------------------------------------------------


def test_jsonl_keeps_json_values_and_line_numbers(write):
    lines = [
        '{"text": "a", "label": 1}',
        "",
        '{"text": "b", "label": ["x", "y"], "extra": true}',
        '{"text": "c"}',
    ]
    df = read_table(write("t.jsonl", "\n".join(lines) + "\n"))
    assert list(df.columns) == ["text", "label", "extra"]
    assert list(df.index) == [1, 3, 4]
    assert df.loc[1, "label"] == 1
    assert df.loc[3, "label"] == ["x", "y"]
    assert df.loc[4, "label"] is None
    assert df.loc[1, "extra"] is None


def test_jsonl_invalid_line_is_named(write):
    err = _error(write("t.jsonl", '{"text": "a", "label": 1}\n\n{"text": "b" "label": 2}\n'))
    assert err.message.startswith("line 3: not valid JSON")


def test_jsonl_line_that_is_not_an_object(write):
    err = _error(write("t.jsonl", '{"text": "a", "label": 1}\n["b", 2]\n'))
    assert err.message.startswith("line 2: expected a JSON object")
    assert "found a list" in err.message


def test_jsonl_is_sniffed_without_an_extension(write):
    summary = inspect_upload(write("upload", '\n  {"text": "a", "label": "x"}\n'), filename="upload")
    assert summary == FileSummary(format="jsonl", encoding="utf-8", rows=1, columns=["text", "label"])


def test_jsonl_content_wins_over_a_csv_extension(write):
    summary = inspect_upload(write("t.csv", '{"text": "a", "label": "x"}\n'), filename="t.csv")
    assert summary.format == "jsonl"


def test_json_array_file(write):
    path = write("t.json", json.dumps([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}], indent=2))
    df = read_table(path)
    assert df.index.name == "record"
    assert list(df["text"]) == ["a", "b"]


# --- Parquet -----------------------------------------------------------------------------------


def test_parquet_round_trip_sniffed_by_magic(tmp_path):
    table = pa.table({"text": ["a", None, "c"], "label": [1, 2, None], "tags": [["x"], [], ["y", "z"]]})
    path = tmp_path / "data.bin"
    pq.write_table(table, path)
    df = read_table(path)
    assert df.index.name == "row"
    assert list(df.index) == [1, 2, 3]
    assert df.loc[1, "label"] == 1
    assert df.loc[2, "text"] is None
    assert df.loc[3, "tags"] == ["y", "z"]
    assert inspect_upload(path, filename="data.bin") == FileSummary(
        "parquet", None, 3, ["text", "label", "tags"]
    )


def test_corrupt_parquet(write):
    err = _error(write("t.parquet", b"PAR1" + b"garbage" * 10), "t.parquet")
    assert "could not be read as Parquet" in err.message


def test_inspect_upload_counts_rows_and_uses_param_file(write):
    path = write("t.csv", "text,label,extra\na,b,c\nd,e,f\n")
    assert inspect_upload(path, filename="t.csv") == FileSummary(
        "csv", "utf-8", 2, ["text", "label", "extra"]
    )
    with pytest.raises(InvalidFile) as info:
        inspect_upload(write("bad.csv", "a,b\n1,2,3\n"), filename="bad.csv")
    assert info.value.param == "file"
    assert info.value.message.startswith("line 2:")


def test_parquet_written_by_pandas_hides_its_index(tmp_path):
    import pandas as pd

    # An unnamed, non-range index is stored as a column "__index_level_0__".
    frame = pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]}, index=[10, 20])
    frame.to_parquet(tmp_path / "t.parquet")
    assert "__index_level_0__" in pq.read_schema(tmp_path / "t.parquet").names
    summary = inspect_upload(tmp_path / "t.parquet", filename="t.parquet")
    assert summary.columns == ["text", "label"]


def test_json_array_record_that_is_not_an_object(write):
    err = _error(write("t.json", '[{"text": "a", "label": "x"}, "oops"]'))
    assert err.message.startswith("record 2: expected a JSON object")
