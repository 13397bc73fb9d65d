"""A seeded generator of hostile `POST /v1/files` requests.

Every case is a whole HTTP request body (the multipart form is built by hand in
tests/hostile/payloads.py, so a case can break the form, not only the file). `cases(seed, n)`
yields exactly `n` cases: the landmarks named in issue #6 (a 10 MB field, 100k columns, a
million-digit number, JSON nested 10^5 deep, a gzip bomb, a Parquet file with a corrupt footer,
UTF-16 without BOM, a BOM-only file...) plus random draws from parametric families. The heavy
landmarks come last so that a slow one cannot hide the cost of the others. The same seed always
gives the same bytes, so a failure names a case that can be rebuilt and replayed alone.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator

from tests.helpers.datasets import toy_rows
from tests.hostile.payloads import (
    ACCENTED,
    MB,
    SAMPLE,
    Case,
    base_file,
    boundary,
    csv_bytes,
    gzip_bomb,
    insert_randomly,
    json_array_bytes,
    jsonl_bytes,
    multipart,
    nested_json,
    parquet_bytes,
    rows,
    upload,
)

# --- families -------------------------------------------------------------------------------------
# Each takes a seeded Random and returns a Case (its index is set by `cases`).


def f_truncated(rng: random.Random) -> Case:
    data, name = base_file(rng)
    cut = rng.randrange(1, len(data))
    return upload(rng, "truncated", f"{name} cut at byte {cut}/{len(data)}", data[:cut], name)


def f_bitflip(rng: random.Random) -> Case:
    data, name = base_file(rng)
    out = bytearray(data)
    flips = rng.randint(1, 8)
    for _ in range(flips):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return upload(rng, "bitflip", f"{name} with {flips} random bytes", bytes(out), name)


ENCODINGS = ["latin-1", "cp1252", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-16", "utf-32",
             "shift_jis", "koi8-r", "euc-kr", "big5", "gb18030", "utf-8-sig", "cp437", "mac-roman", "utf-7"]


def f_encoding(rng: random.Random) -> Case:
    enc = rng.choice(ENCODINGS)
    table = [(f"{rng.choice(ACCENTED)} {t}", lab) for t, lab in rows(rng)]
    text = csv_bytes(table).decode()
    data = text.encode(enc, errors="replace")
    return upload(rng, "encoding", f"CSV encoded as {enc}", data, rng.choice(["train.csv", "train.txt", "data"]))


def f_random_bytes(rng: random.Random) -> Case:
    n = rng.choice([1, 2, 3, 7, 64, 512, 4096, 70_000])
    name = rng.choice(["x.csv", "x.jsonl", "x.parquet", "x.json", "x.tsv", "x", "x.bin"])
    return upload(rng, "random_bytes", f"{n} random bytes as {name}", rng.randbytes(n), name)


def f_nul(rng: random.Random) -> Case:
    data, name = base_file(rng)
    if name.endswith(".parquet"):
        data, name = csv_bytes(rows(rng)), "train.csv"
    late = rng.random() < 0.3
    if late:  # past the sniffed sample: only the parser can see it
        pad = csv_bytes([(f"padding row {i} " + "x" * 80, "positive") for i in range(SAMPLE // 80 + 10)])
        data = pad + b'"a\x00b",negative\n'
        name = "train.csv"
    else:
        data = insert_randomly(data, rng, b"\x00", rng.randint(1, 5))
    return upload(rng, "nul", f"{name} with NUL bytes{' after 64 KiB' if late else ''}", data, name)


def f_quotes(rng: random.Random) -> Case:
    data = csv_bytes(rows(rng))
    n = rng.randint(1, 5)
    return upload(rng, "quotes", f"CSV with {n} stray double quotes", insert_randomly(data, rng, b'"', n), "train.csv")


def f_ragged(rng: random.Random) -> Case:
    table: list[list[str]] = [list(r) for r in rows(rng)]
    for r in rng.sample(table, rng.randint(1, max(1, len(table) // 3))):
        if rng.random() < 0.5:
            r.extend(["extra"] * rng.randint(1, 4))
        else:
            del r[rng.randrange(len(r)):]
    return upload(rng, "ragged", "CSV rows with mismatched column counts", csv_bytes(table), "train.csv")


def f_header(rng: random.Random) -> Case:
    choice = rng.choice(["dup", "empty", "only", "bom_mid", "one", "spaces", "long", "formula"])
    table = rows(rng)
    header = {
        "dup": ("text", "text"), "empty": ("", ""), "only": ("text", "label"), "bom_mid": ("te\ufeffxt", "label"),
        "one": ("text",), "spaces": ("  ", "label "), "long": ("t" * 5000, "label"), "formula": ("=cmd|' /C calc'!A0", "@x"),
    }[choice]
    body = csv_bytes([] if choice == "only" else [r[: len(header)] for r in table], header=header)
    return upload(rng, "header", f"CSV header problem: {choice}", body, "train.csv")


BLANKS = {
    "empty": b"", "bom_only": b"\xef\xbb\xbf", "newlines": b"\n" * 1000, "crlf": b"\r\n" * 500, "cr": b"\r" * 300,
    "spaces": b" \t " * 400, "commas": b",,,\n" * 100, "bom_newlines": b"\xef\xbb\xbf\n\n\n",
    "utf16_bom_only": b"\xff\xfe", "utf16_bom_newlines": "\n\n".encode("utf-16"), "semicolons": b";;\n;;\n",
    "quotes_only": b'""\n""\n', "header_blank_rows": b"text,label\n\n\n,\n , \n",
}


def f_blank(rng: random.Random) -> Case:
    key = rng.choice(sorted(BLANKS))
    name = rng.choice(["x.csv", "x.jsonl", "x.json", "x.tsv", "x.txt"])
    return upload(rng, "blank", f"{key} as {name}", BLANKS[key], name)


def f_line_endings(rng: random.Random) -> Case:
    data = csv_bytes(rows(rng))
    eol = rng.choice([b"\r", b"\r\r\n", b"\n\r", b"\x85", "\u2028".encode()])
    return upload(rng, "line_endings", f"CSV with line ending {eol!r}", data.replace(b"\n", eol), "train.csv")


def f_control(rng: random.Random) -> Case:
    density = rng.choice([0.001, 0.005, 0.02, 0.2])
    table = []
    for t, lab in rows(rng):
        chars = [c if rng.random() > density else chr(rng.choice([1, 2, 7, 8, 11, 14, 27, 31, 127])) for c in t]
        table.append(("".join(chars), lab))
    return upload(rng, "control", f"CSV with control characters (density {density})", csv_bytes(table), "train.csv")


JSONL_JUNK = [
    b"[1, 2, 3]", b'"just a string"', b"42", b"null", b"true", b'{"text": "a", "label": "b",}',
    b"{'text': 'a', 'label': 'b'}", b'{"text": NaN, "label": "b"}', b'{"text": "a", "label": Infinity}',
    b'{"text": "unterminated, "label": "b"}', b'{"text": "\\ud800", "label": "b"}',
    b'{"text": "\\udfff\\ud800", "label": "\\ud83d"}', b'{"\\ud800": "x", "text": "a", "label": "b"}',
    b'{"text": "a\\u0000b", "label": "b"}', b'{"a\\u0000b": 1, "text": "a", "label": "b"}',
    b'{"text": "a", "text": "b", "label": "c"}', b"{}", b'{"text": {"nested": [1, 2]}, "label": "b"}',
    b'{"text": "a", "label": ["x", "y"]}', b'{"text": 1e999, "label": -1e999}', b'{"text": 123, "label": 4.5}',
    b'{"text": true, "label": null}', b'{"text": "a", "label": "b"} trailing', b"\xff\xfe{}",
    b'{"text": "' + b"\\" * 7 + b'", "label": "b"}', b'{"text": "a\tb\x01c", "label": "b"}',
    b'{"text": "a", "label": 1' + b"0" * 400 + b"}", b'{"text": "a", "label": 1e-99999999}',
]


def f_jsonl_lines(rng: random.Random) -> Case:
    lines = jsonl_bytes(rows(rng)).splitlines()
    bad = rng.sample(JSONL_JUNK, rng.randint(1, 3))
    for junk in bad:
        lines.insert(rng.randrange(len(lines) + 1), junk)
    note = "JSONL with " + " / ".join(j[:40].decode("latin-1") for j in bad)
    return upload(rng, "jsonl_lines", note, b"\n".join(lines) + b"\n", rng.choice(["train.jsonl", "train.ndjson"]))


def f_json_nesting(rng: random.Random) -> Case:
    depth = rng.choice([10, 100, 500, 990, 1_000, 1_500, 3_000, 10_000])
    kind = rng.choice(["list", "dict"])
    line = '{"text": "a", "label": "b", "x": ' + nested_json(depth, kind=kind) + "}"
    body = (jsonl_bytes(rows(rng, 6)).decode() + line + "\n").encode()
    return upload(rng, "json_nesting", f"JSONL with a {kind} nested {depth} deep", body, "train.jsonl")


def f_bigint(rng: random.Random) -> Case:
    digits = rng.choice([100, 4_300, 4_301, 5_000, 20_000])
    number = "9" * digits
    if rng.random() < 0.5:
        body = (jsonl_bytes(rows(rng, 6)).decode() + f'{{"text": "a", "label": {number}}}\n').encode()
        return upload(rng, "bigint", f"JSONL with a {digits}-digit integer", body, "train.jsonl")
    body = csv_bytes(rows(rng, 6) + [("a", number)])
    return upload(rng, "bigint", f"CSV with a {digits}-digit integer", body, "train.csv")


def f_json_array(rng: random.Random) -> Case:
    variant = rng.choice(["scalars", "mixed", "nested", "object", "empty", "strings", "unclosed"])
    table = rows(rng, 6)
    data = {
        "scalars": b"[1, 2, 3]",
        "mixed": json.dumps([{"text": "a", "label": "b"}, 1, "x"]).encode(),
        "nested": json.dumps([[{"text": t, "label": lab}] for t, lab in table]).encode(),
        "object": json.dumps({"data": [{"text": t, "label": lab} for t, lab in table]}).encode(),
        "empty": b"[]",
        "strings": json.dumps([t for t, _ in table]).encode(),
        "unclosed": json_array_bytes(table)[:-1],
    }[variant]
    return upload(rng, "json_array", f"JSON array: {variant}", data, rng.choice(["train.json", "train.jsonl"]))


def f_parquet(rng: random.Random) -> Case:
    table = rows(rng)
    good = parquet_bytes({"text": [t for t, _ in table], "label": [lab for _, lab in table]})
    variant = rng.choice(["footer_bytes", "footer_len", "footer_len_huge", "truncated", "junk_between", "no_tail",
                          "nested", "zero_rows", "wide", "binary", "nulls", "csv_as_parquet", "dictionary",
                          "magic_only"])
    if variant == "footer_bytes":  # damage the Thrift metadata just before the length field
        out = bytearray(good)
        for _ in range(rng.randint(1, 16)):
            out[len(out) - 8 - rng.randint(1, 120)] = rng.randrange(256)
        data = bytes(out)
    elif variant == "footer_len":
        data = good[:-8] + struct.pack("<I", rng.randrange(1, len(good))) + b"PAR1"
    elif variant == "footer_len_huge":
        data = good[:-8] + struct.pack("<I", rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 2**30])) + b"PAR1"
    elif variant == "truncated":
        data = good[: rng.randrange(4, len(good))]
    elif variant == "junk_between":
        data = b"PAR1" + rng.randbytes(rng.randint(0, 2000)) + b"PAR1"
    elif variant == "no_tail":
        data = good[:-4]
    elif variant == "nested":
        data = parquet_bytes({"text": [{"a": t, "b": [1, 2]} for t, _ in table], "label": [[lab] for _, lab in table]})
    elif variant == "zero_rows":
        data = parquet_bytes({"text": [], "label": []})
    elif variant == "wide":
        n = rng.choice([100, 1000, 2000])
        data = parquet_bytes({f"c{i}": ["x"] for i in range(n)} | {"text": ["a"], "label": ["b"]})
    elif variant == "binary":
        data = parquet_bytes({"text": [rng.randbytes(20) for _ in table], "label": [lab for _, lab in table]})
    elif variant == "nulls":
        data = parquet_bytes({"text": [None] * len(table), "label": [None] * len(table)})
    elif variant == "dictionary":
        data = parquet_bytes({"text": [t for t, _ in table], "label": [lab for _, lab in table]},
                             use_dictionary=True, compression=rng.choice(["snappy", "gzip", "zstd", "none"]))
    elif variant == "magic_only":
        data = b"PAR1"
    else:
        data = csv_bytes(table)
    return upload(rng, "parquet", f"Parquet: {variant}", data, rng.choice(["train.parquet", "train.pq", "train"]))


def _zip_bytes(rng: random.Random) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # fixed timestamps: the same seed gives the same bytes
        z.writestr(zipfile.ZipInfo("xl/workbook.xml", (2020, 1, 1, 0, 0, 0)), "<workbook/>")
        z.writestr(zipfile.ZipInfo("train.csv", (2020, 1, 1, 0, 0, 0)), csv_bytes(rows(rng)))
    return buf.getvalue()


def f_foreign(rng: random.Random) -> Case:
    variant = rng.choice(["zip", "ole", "pdf", "gzip", "bz2", "xz", "png", "elf", "gzip_bomb_small"])
    if variant == "zip":
        data = _zip_bytes(rng)
    elif variant == "ole":
        data = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + rng.randbytes(512)
    elif variant == "pdf":
        data = b"%PDF-1.7\n" + csv_bytes(rows(rng))
    elif variant == "gzip":
        data = gzip.compress(csv_bytes(rows(rng)), mtime=0)
    elif variant == "bz2":
        import bz2

        data = bz2.compress(csv_bytes(rows(rng)))
    elif variant == "xz":
        import lzma

        data = lzma.compress(csv_bytes(rows(rng)))
    elif variant == "png":
        data = b"\x89PNG\r\n\x1a\n" + rng.randbytes(256)
    elif variant == "elf":
        data = b"\x7fELF\x02\x01\x01" + rng.randbytes(256)
    else:
        data = gzip_bomb(16 * MB)
    name = rng.choice(["train.csv", "train.jsonl", "train.csv.gz", "train.xlsx", "train"])
    return upload(rng, "foreign", f"{variant} as {name}", data, name)


FILENAMES = [
    "../../../../etc/passwd", "..\\..\\windows\\win.ini", "/abs/path/train.csv", "a" * 1000 + ".csv", "",
    ".csv", "train", "train.CSV", "ｔｒａｉｎ.ｃｓｖ", "\u202evsc.exe", "tra\x01in.csv", "tab\there.csv",
    'quote"s.csv', "semi;colon.csv", "new\r\nline.csv", "%2e%2e%2fpasswd.csv", "CON.csv", "train.csv.exe",
    "train.parquet", "train.jsonl", "train.json", "💥.csv", "\udcff.csv", "x" * 300 + "/" + "y" * 300,
]


def f_filename(rng: random.Random) -> Case:
    name = rng.choice(FILENAMES)
    data = csv_bytes(rows(rng))
    parts = [("purpose", None, b"fine-tune", None), ("file", name, data, "text/csv")]
    body, ctype = multipart(parts, boundary(rng), raw_names=rng.random() < 0.5)
    return Case(-1, "filename", f"filename {name[:60]!r}", body, ctype, file_bytes=data, filename=name)


def f_form(rng: random.Random) -> Case:
    data = csv_bytes(rows(rng))
    variant = rng.choice(["no_purpose", "bad_purpose", "huge_purpose", "no_file", "file_as_field", "two_files",
                          "extra_fields", "purpose_twice", "no_filename", "results_purpose", "utf8_purpose",
                          "empty_purpose"])
    file_part = ("file", "train.csv", data, "text/csv")
    parts: list[tuple[str, str | None, bytes, str | None]] = {
        "no_purpose": [file_part],
        "bad_purpose": [("purpose", None, b"assistants", None), file_part],
        "huge_purpose": [("purpose", None, b"p" * 100_000, None), file_part],
        "no_file": [("purpose", None, b"fine-tune", None)],
        "file_as_field": [("purpose", None, b"fine-tune", None), ("file", None, data, None)],
        "two_files": [("purpose", None, b"fine-tune", None), file_part, ("file", "b.csv", data, "text/csv")],
        "extra_fields": [("purpose", None, b"fine-tune", None), file_part, ("x", None, b"y", None),
                         ("z", "z.bin", b"\x00" * 10, None)],
        "purpose_twice": [("purpose", None, b"assistants", None), ("purpose", None, b"fine-tune", None), file_part],
        "no_filename": [("purpose", None, b"fine-tune", None), ("file", None, data, "text/csv")],
        "results_purpose": [("purpose", None, b"fine-tune-results", None), file_part],
        "utf8_purpose": [("purpose", None, "fïne-tune\u202e".encode(), None), file_part],
        "empty_purpose": [("purpose", None, b"", None), file_part],
    }[variant]
    body, ctype = multipart(parts, boundary(rng))
    return Case(-1, "form", f"form: {variant}", body, ctype)


def f_multipart_raw(rng: random.Random) -> Case:
    data = csv_bytes(rows(rng))
    good, ctype = multipart([("purpose", None, b"fine-tune", None), ("file", "t.csv", data, "text/csv")],
                            "----hostileboundary")
    variant = rng.choice(["wrong_boundary", "no_closing", "no_boundary_param", "json_body", "urlencoded", "empty",
                          "junk", "long_part_header", "many_fields", "many_files", "truncated_headers",
                          "lf_only", "text_plain", "boundary_in_data"])
    headers: dict[str, str] = {}
    if variant == "wrong_boundary":
        body, ctype = good, "multipart/form-data; boundary=----other"
    elif variant == "no_closing":
        body = good[: good.rfind(b"----hostileboundary--")]
    elif variant == "no_boundary_param":
        body, ctype = good, "multipart/form-data"
    elif variant == "json_body":
        body, ctype = json.dumps({"purpose": "fine-tune", "file": data.decode()}).encode(), "application/json"
    elif variant == "urlencoded":
        body, ctype = b"purpose=fine-tune&file=" + data.replace(b"\n", b"%0A"), "application/x-www-form-urlencoded"
    elif variant == "empty":
        body = b""
    elif variant == "junk":
        body = rng.randbytes(rng.randint(1, 5000))
    elif variant == "long_part_header":
        body, ctype = multipart([("purpose", None, b"fine-tune", None),
                                 ("file", "t" * 200_000 + ".csv", data, "text/csv")], "----hostileboundary")
    elif variant == "many_fields":
        n = rng.choice([999, 1001, 5000])
        body, ctype = multipart([("purpose", None, b"fine-tune", None), ("file", "t.csv", data, "text/csv")]
                                + [(f"f{i}", None, b"x", None) for i in range(n)], "----hostileboundary")
    elif variant == "many_files":
        n = rng.choice([999, 1001, 3000])
        body, ctype = multipart([("purpose", None, b"fine-tune", None)]
                                + [("file", f"t{i}.csv", b"text,label\na,b\n", "text/csv") for i in range(n)],
                                "----hostileboundary")
    elif variant == "truncated_headers":
        body = good[: good.find(b"\r\n\r\n") - 5]
    elif variant == "lf_only":
        body = good.replace(b"\r\n", b"\n")
    elif variant == "text_plain":
        body, ctype = data, "text/plain"
    else:
        body, ctype = multipart([("purpose", None, b"fine-tune", None),
                                 ("file", "t.csv", data + b"\r\n------hostileboundary\r\n" + data, "text/csv")],
                                "----hostileboundary")
    return Case(-1, "multipart_raw", f"multipart: {variant}", body, ctype, headers)


def f_content_encoding(rng: random.Random) -> Case:
    data = csv_bytes(rows(rng))
    body, ctype = multipart([("purpose", None, b"fine-tune", None), ("file", "t.csv", data, "text/csv")],
                            boundary(rng))
    variant = rng.choice(["gzip_real", "gzip_claimed", "br", "deflate_real", "chained"])
    if variant == "gzip_real":
        return Case(-1, "content_encoding", "gzip-compressed request body", gzip.compress(body, mtime=0), ctype,
                    {"Content-Encoding": "gzip"})
    if variant == "deflate_real":
        return Case(-1, "content_encoding", "deflate-compressed request body", zlib.compress(body), ctype,
                    {"Content-Encoding": "deflate"})
    encoding = {"gzip_claimed": "gzip", "br": "br", "chained": "gzip, identity, br"}[variant]
    return Case(-1, "content_encoding", f"plain body sent as Content-Encoding: {encoding}", body, ctype,
                {"Content-Encoding": encoding})


FAMILIES: dict[str, Callable[[random.Random], Case]] = {
    "truncated": f_truncated, "bitflip": f_bitflip, "encoding": f_encoding, "random_bytes": f_random_bytes,
    "nul": f_nul, "quotes": f_quotes, "ragged": f_ragged, "header": f_header, "blank": f_blank,
    "line_endings": f_line_endings, "control": f_control, "jsonl_lines": f_jsonl_lines,
    "json_nesting": f_json_nesting, "bigint": f_bigint, "json_array": f_json_array, "parquet": f_parquet,
    "foreign": f_foreign, "filename": f_filename, "form": f_form, "multipart_raw": f_multipart_raw,
    "content_encoding": f_content_encoding,
}


# --- landmarks ------------------------------------------------------------------------------------


def _landmark(family: str, note: str, data: bytes, filename: str, **kwargs) -> Callable[[random.Random], Case]:
    return lambda rng: upload(rng, family, note, data() if callable(data) else data, filename, **kwargs)


def _csv_10mb_field() -> bytes:
    return b'text,label\n"' + b"x" * (10 * MB) + b'",positive\nhello,negative\n'


def _jsonl_10mb_string() -> bytes:
    return b'{"text": "' + b"y" * (10 * MB) + b'", "label": "a"}\n{"text": "b", "label": "c"}\n'


def _csv_100k_columns() -> bytes:
    n = 100_000
    return (",".join(f"c{i}" for i in range(n)) + "\n" + ",".join("v" for _ in range(n)) + "\n").encode()


def _jsonl_100k_keys() -> bytes:
    obj = {f"k{i}": i for i in range(100_000)} | {"text": "a", "label": "b"}
    return (json.dumps(obj) + "\n").encode()


def _deep_jsonl() -> bytes:
    return ('{"text": "a", "label": "b", "x": ' + nested_json(100_000) + "}\n").encode()


def _corrupt_footer(rng: random.Random) -> bytes:
    """A valid Parquet file whose Thrift footer (the 52 bytes before length + magic) is random."""
    good = parquet_bytes({"text": ["a", "b"], "label": ["x", "y"]})
    return good[: len(good) - 60] + rng.randbytes(52) + good[-8:]


LIGHT_LANDMARKS: dict[str, Callable[[random.Random], Case]] = {
    "utf16le_no_bom": _landmark("landmark", "UTF-16-LE without BOM",
                                csv_bytes(toy_rows(10)).decode().encode("utf-16-le"), "train.csv"),
    "utf16be_no_bom": _landmark("landmark", "UTF-16-BE without BOM",
                                csv_bytes(toy_rows(10)).decode().encode("utf-16-be"), "train.csv"),
    "latin1": _landmark("landmark", "latin-1 CSV",
                        csv_bytes([(f"{t} café à la crème", lab) for t, lab in toy_rows(10)]).decode()
                        .encode("latin-1"), "train.csv"),
    "bom_only": _landmark("landmark", "UTF-8 BOM only", b"\xef\xbb\xbf", "train.csv"),
    "newlines_only": _landmark("landmark", "only newlines", b"\n" * 10_000, "train.csv"),
    "unbalanced_quote": _landmark("landmark", "unbalanced quote",
                                  b'text,label\n"never closed,positive\nok,negative\n', "train.csv"),
    "mismatched_columns": _landmark("landmark", "CSV with mismatched columns",
                                    b"text,label\na,b,c\nd\ne,f\n", "train.csv"),
    "nul_bytes": _landmark("landmark", "NUL bytes", b"text,label\nhel\x00lo,a\n", "train.csv"),
    "random_bytes": lambda rng: upload(rng, "landmark", "random bytes", rng.randbytes(10_000), "train.csv"),
    "parquet_corrupt_footer": lambda rng: upload(rng, "landmark", "Parquet with a corrupt footer",
                                                 _corrupt_footer(rng), "train.parquet"),
    "gzip_upload": lambda rng: upload(rng, "landmark", "gzip-compressed CSV",
                                      gzip.compress(csv_bytes(toy_rows(10)), mtime=0), "train.csv.gz"),
    "surrogate_column": _landmark("landmark", "JSONL column named by a lone surrogate escape",
                                  b'{"\\ud800": "x", "text": "a", "label": "b"}\n', "train.jsonl"),
}

HEAVY_LANDMARKS: dict[str, Callable[[random.Random], Case]] = {
    "deep_json": _landmark("landmark", "JSONL nested 100,000 deep", _deep_jsonl, "train.jsonl"),
    "million_digit_jsonl": _landmark("landmark", "JSONL with a 1,000,000-digit number",
                                     lambda: b'{"text": "a", "label": ' + b"7" * 1_000_000 + b"}\n", "train.jsonl"),
    "million_digit_csv": _landmark("landmark", "CSV with a 1,000,000-digit number",
                                   lambda: b"text,label\na," + b"7" * 1_000_000 + b"\n", "train.csv"),
    "csv_10mb_field": _landmark("landmark", "CSV with a 10 MB field", _csv_10mb_field, "train.csv"),
    "jsonl_10mb_string": _landmark("landmark", "JSONL with a 10 MB string", _jsonl_10mb_string, "train.jsonl"),
    "gzip_bomb_upload": _landmark("landmark", "gzip bomb (1 GiB inflated) uploaded as a file",
                                  lambda: gzip_bomb(1024 * MB), "train.csv"),
    "gzip_bomb_encoding": lambda rng: Case(-1, "landmark", "gzip bomb (1 GiB) as Content-Encoding: gzip",
                                           gzip_bomb(1024 * MB), "multipart/form-data; boundary=x",
                                           {"Content-Encoding": "gzip"}),
    "jsonl_100k_keys": _landmark("landmark", "JSONL object with 100,000 keys", _jsonl_100k_keys, "train.jsonl"),
    "csv_100k_columns": _landmark("landmark", "CSV with 100,000 columns", _csv_100k_columns, "train.csv"),
}


def recipes(seed: int, n: int) -> list[tuple[str, int]]:
    """(generator name, case seed) for n cases: landmarks, random families, heavy landmarks last."""
    rng = random.Random(seed)
    heavy = [(f"heavy:{name}", rng.randrange(2**32)) for name in HEAVY_LANDMARKS]
    light = [(f"light:{name}", rng.randrange(2**32)) for name in LIGHT_LANDMARKS]
    n_random = n - len(heavy) - len(light)
    assert n_random >= 0, f"need at least {len(heavy) + len(light)} cases for the landmarks"
    families = sorted(FAMILIES)
    drawn = [(rng.choice(families), rng.randrange(2**32)) for _ in range(n_random)]
    body = light + drawn
    rng.shuffle(body)
    return body + heavy


def build(recipe: tuple[str, int], index: int) -> Case:
    name, case_seed = recipe
    rng = random.Random(case_seed)
    if name.startswith("heavy:"):
        case = HEAVY_LANDMARKS[name[6:]](rng)
    elif name.startswith("light:"):
        case = LIGHT_LANDMARKS[name[6:]](rng)
    else:
        case = FAMILIES[name](rng)
    return Case(index, case.family if not name.startswith(("heavy:", "light:")) else name, case.note, case.body,
                case.content_type, case.headers, case.file_bytes, case.filename)


def cases(seed: int, n: int) -> Iterator[Case]:
    """Exactly `n` cases, built one at a time (a few are 10 MB; none is kept)."""
    for index, recipe in enumerate(recipes(seed, n)):
        yield build(recipe, index)
