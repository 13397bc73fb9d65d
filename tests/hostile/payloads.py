"""Building blocks for hostile requests: the Case record, a hand-made multipart encoder (so a case
can break the form itself), well-formed training data to damage, and decompression bombs that take
milliseconds to build. tests/hostile/malformed.py draws cases from these.
"""

from __future__ import annotations

import csv
import io
import json
import random
import struct
import zlib
from dataclasses import dataclass, field

from tests.helpers.datasets import toy_rows

MB = 1024 * 1024
SAMPLE = 64 * 1024  # aiaas.data.formats.SAMPLE_BYTES: how much of a file the sniffer reads


@dataclass(frozen=True)
class Case:
    """One request: `body` goes to POST /v1/files with `content_type` and `headers`."""

    index: int
    family: str
    note: str
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    file_bytes: bytes | None = None  # the uploaded file itself, when the form is well formed
    filename: str | None = None

    def describe(self) -> str:
        return f"case {self.index} [{self.family}] {self.note} ({len(self.body)} bytes)"


# --- the form ----------------------------------------------------------------------------------


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def multipart(
    parts: list[tuple[str, str | None, bytes, str | None]], boundary: str, *, raw_names: bool = False
) -> tuple[bytes, str]:
    """Encode (name, filename, data, part content type) parts; returns (body, Content-Type)."""
    out = io.BytesIO()
    for name, filename, data, ctype in parts:
        out.write(f"--{boundary}\r\n".encode())
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            shown = filename if raw_names else _quote(filename)
            disposition += f'; filename="{shown}"'
        out.write(b"Content-Disposition: " + disposition.encode("utf-8", "surrogateescape") + b"\r\n")
        if ctype:
            out.write(f"Content-Type: {ctype}\r\n".encode())
        out.write(b"\r\n" + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def boundary(rng: random.Random) -> str:
    return "----hostile" + "".join(rng.choice("0123456789abcdef") for _ in range(16))


def upload(rng: random.Random, family: str, note: str, data: bytes, filename: str,
           purpose: str = "fine-tune", headers: dict[str, str] | None = None) -> Case:
    parts = [("purpose", None, purpose.encode(), None), ("file", filename, data, "application/octet-stream")]
    if rng.random() < 0.5:
        parts.reverse()  # field order must not matter
    body, ctype = multipart(parts, boundary(rng))
    return Case(-1, family, note, body, ctype, headers or {}, file_bytes=data, filename=filename)


# --- well-formed material to break ---------------------------------------------------------------

ACCENTED = ["café crème brûlée", "naïve façade", "Grüße aus Köln", "東京の天気", "señor niño",
            "Ελληνικά κείμενα", "русский текст", "emoji 🙂 ok"]


def rows(rng: random.Random, n: int | None = None) -> list[tuple[str, str]]:
    data = toy_rows(n_per_class=rng.randint(4, 20), seed=rng.randrange(1000))
    return data if n is None else data[:n]


def csv_bytes(table: list[tuple[str, ...]] | list[list[str]], *, header=("text", "label"), delimiter=",") -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    if header:
        w.writerow(header)
    w.writerows(table)
    return buf.getvalue().encode()


def jsonl_bytes(table: list[tuple[str, str]]) -> bytes:
    return "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in table).encode()


def json_array_bytes(table: list[tuple[str, str]]) -> bytes:
    return json.dumps([{"text": t, "label": lab} for t, lab in table]).encode()


def parquet_bytes(columns: dict[str, list], **kwargs) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf, **kwargs)
    return buf.getvalue()


def base_file(rng: random.Random) -> tuple[bytes, str]:
    """A valid training file in a random format, and a fitting filename."""
    table = rows(rng)
    kind = rng.choice(["csv", "jsonl", "json", "parquet", "tsv"])
    if kind == "csv":
        return csv_bytes(table), "train.csv"
    if kind == "tsv":
        return csv_bytes(table, delimiter="\t"), "train.tsv"
    if kind == "jsonl":
        return jsonl_bytes(table), "train.jsonl"
    if kind == "json":
        return json_array_bytes(table), "train.json"
    return parquet_bytes({"text": [t for t, _ in table], "label": [lab for _, lab in table]}), "train.parquet"


def insert_randomly(data: bytes, rng: random.Random, piece: bytes, times: int) -> bytes:
    out = bytearray(data)
    for _ in range(times):
        at = rng.randrange(len(out) + 1)
        out[at:at] = piece
    return bytes(out)


def nested_json(depth: int, *, kind: str = "list") -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def gzip_bomb(inflated: int, *, chunk: int = MB) -> bytes:
    """A gzip member that inflates to `inflated` zero bytes, built in milliseconds.

    Each chunk is compressed after a full flush, so every chunk's deflate bytes are the
    same: compress one and repeat it, then close the stream and add the gzip trailer.
    """
    assert inflated % chunk == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush(zlib.Z_FINISH)
    crc = 0
    zero = bytes(chunk)
    for _ in range(inflated // chunk):
        crc = zlib.crc32(zero, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + block * (inflated // chunk) + tail + struct.pack("<II", crc, inflated & 0xFFFFFFFF)


def deflate_bomb(inflated: int, *, chunk: int = MB) -> bytes:
    """The zlib-wrapped (Content-Encoding: deflate) variant of gzip_bomb."""
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush(zlib.Z_FINISH)
    adler = 1
    zero = bytes(chunk)
    for _ in range(inflated // chunk):
        adler = zlib.adler32(zero, adler)
    return b"\x78\xda" + block * (inflated // chunk) + tail + struct.pack(">I", adler)
