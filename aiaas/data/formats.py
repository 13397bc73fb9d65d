"""Tell what kind of file an upload is, and which text encoding to read it with.

Looks only at the file name and the first SAMPLE_BYTES bytes, so it costs the same
for a 1 KB and a 1 GB file. The readers do the full parse; when a later part of a
file fails to decode with the first guess they fall back to the next candidate.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aiaas.core.errors import InvalidFile

SAMPLE_BYTES = 64 * 1024

ParseKind = Literal["csv", "jsonl", "json_array", "parquet"]

_EXTENSIONS: dict[str, ParseKind] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}

# Formats people often upload by mistake, with the fix to suggest.
_FOREIGN_MAGIC: list[tuple[bytes, str]] = [
    (
        b"PK\x03\x04",
        "it looks like a ZIP archive or an Excel workbook (.xlsx); export the sheet as CSV UTF-8",
    ),
    (
        b"\xd0\xcf\x11\xe0",
        "it looks like an old Excel or Word file (.xls/.doc); export the sheet as CSV UTF-8",
    ),
    (b"\x1f\x8b", "it looks gzip-compressed; decompress it first"),
    (b"%PDF", "it looks like a PDF document"),
]

_NOT_A_TABLE = "is not a CSV, JSONL or Parquet file"
_WHAT_TO_UPLOAD = (
    "Upload a UTF-8 CSV with a header row, a JSONL file (one JSON object per line) or a Parquet file."
)

# Control characters that never appear in real text files (tab, LF, FF, CR and ESC excluded).
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27))


@dataclass(frozen=True)
class Detected:
    """How to parse a file: the parser, the encodings to try in order, the CSV delimiter."""

    kind: ParseKind
    encodings: tuple[str, ...]
    delimiter: str = ","


def subject(param: str) -> str:
    """How messages name the file: by the request field it came from ('training_file')."""
    return "the file" if param == "file" else param


def decode_error(param: str) -> InvalidFile:
    return InvalidFile(
        f"{subject(param)} is not readable text: could not decode it as UTF-8 or GB18030; "
        "save the file as UTF-8 (in Excel: Save As > 'CSV UTF-8').",
        param=param,
    )


def detect(path: Path, *, filename: str | None, param: str) -> Detected:
    """Pick the parser and encodings from the extension and a sniff of the first bytes."""
    with open(path, "rb") as fh:
        sample = fh.read(SAMPLE_BYTES)
    return detect_sample(sample, filename=filename or path.name, param=param)


def detect_sample(sample: bytes, *, filename: str, param: str) -> Detected:
    """detect() from the file's first SAMPLE_BYTES bytes (fewer only when the file is shorter)."""
    ext = Path(filename).suffix.lower()
    by_ext = _EXTENSIONS.get(ext)
    if sample.startswith(b"PAR1"):
        return Detected("parquet", ())
    if by_ext == "parquet":
        raise InvalidFile(
            f"{subject(param)} has a Parquet extension ({ext}) but is not a Parquet file "
            "(it does not start with the 'PAR1' marker). " + _WHAT_TO_UPLOAD,
            param=param,
        )
    encodings = _candidate_encodings(sample, param)
    text = _decode_sample(sample, encodings[0])
    if text is None and len(encodings) > 1:
        encodings = encodings[1:]
        text = _decode_sample(sample, encodings[0])
    if text is None:
        raise decode_error(param)
    if encodings == ("utf-8", "gb18030") and not sample.isascii():
        # Non-ASCII that decodes as UTF-8 means the file is UTF-8: a bad byte later is damage,
        # and reading the whole file as GB18030 would silently turn its text into mojibake.
        encodings = ("utf-8",)
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise InvalidFile(
            f"{subject(param)} is empty. It needs a header row (for example: text,label) "
            "and at least one data row.",
            param=param,
        )
    kind = by_ext
    if kind is None:
        kind = "jsonl" if stripped[0] in "{[" else "csv"
    elif stripped[0] == "{":
        kind = "jsonl"  # no CSV header starts with '{': JSON lines saved under another extension
    if kind == "jsonl" and stripped[0] == "[":
        kind = "json_array"
    delimiter = "\t" if ext == ".tsv" else _guess_delimiter(stripped)
    return Detected(kind, encodings, delimiter)


def _candidate_encodings(sample: bytes, param: str) -> tuple[str, ...]:
    """Encodings to try, in order; rejects binary files before anything tries to parse them."""
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # Excel's "Unicode text" export: UTF-16 with a BOM (its NUL bytes are not binary noise).
        return ("utf-16",)
    for magic, hint in _FOREIGN_MAGIC:
        if sample.startswith(magic):
            raise InvalidFile(f"{subject(param)} {_NOT_A_TABLE}: {hint}. {_WHAT_TO_UPLOAD}", param=param)
    if b"\x00" in sample:
        raise InvalidFile(
            f"{subject(param)} {_NOT_A_TABLE}: it contains binary data (NUL bytes). {_WHAT_TO_UPLOAD}",
            param=param,
        )
    controls = len(sample) - len(sample.translate(None, _CONTROL))
    if sample and controls / len(sample) > 0.01:
        raise InvalidFile(
            f"{subject(param)} {_NOT_A_TABLE}: it contains binary data (control bytes). {_WHAT_TO_UPLOAD}",
            param=param,
        )
    if sample.startswith(codecs.BOM_UTF8):
        return ("utf-8-sig",)
    # GB18030 is a superset of GBK and GB2312: what Chinese Excel writes for "CSV".
    return ("utf-8", "gb18030")


def _decode_sample(sample: bytes, encoding: str) -> str | None:
    """Decode the sample, tolerating a multi-byte character cut off at its end."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    try:
        return decoder.decode(sample, final=len(sample) < SAMPLE_BYTES)
    except UnicodeDecodeError:
        return None


def _guess_delimiter(text: str) -> str:
    """Choose ',', tab or ';' by which occurs most in the header line (outside quotes).

    European spreadsheets write ';'; Excel's text export writes tabs. Ties go to ','.
    """
    header = text.split("\n", 1)[0]
    counts = {",": 0, "\t": 0, ";": 0}
    in_quotes = False
    for ch in header:
        if ch == '"':
            in_quotes = not in_quotes
        elif not in_quotes and ch in counts:
            counts[ch] += 1
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","
