"""Uploads are read against limits on what they decode to, not only on bytes sent (issue #13, item 1).

Each hostile file is generated here (a Parquet file of ~130 KB declaring 20 million rows, Parquet pages
that inflate 1,000 times, a dictionary page repeated by millions of rows, a list cell of two million
items, a CSV cell of 10 MB, a 100,000-column header, a 30 MB line, JSON lines and arrays of nested
empty lists), then read twice: by the reader in a fresh process (so its peak memory is its own) and
through POST /v1/files in-process. Each must be refused with its limit's 400 code within 2 s of CPU,
its peak resident memory growing by less than 150 MiB.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aiaas.core.errors import HTTP_STATUS, DecodedLimitExceeded
from aiaas.data.limits import ReadLimits
from aiaas.data.readers import load_table
from tests.hostile.conftest import SQLITE_ONLY

MiB = 1024 * 1024
MAX_CPU_S = 2.0
MAX_RSS_GROWTH = 150 * MiB
REPO = Path(__file__).resolve().parents[2]


# --- hostile files (each built with little memory of its own) -------------------------------------------


def _parquet_rows(path: Path, rows: int, value: str, *, groups: int = 1, **kwargs) -> None:
    """`rows` rows of one dictionary-encoded string column, written `groups` row groups at a time."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    per = rows // groups
    schema = pa.schema([("text", pa.dictionary(pa.int32(), pa.string())), ("label", pa.dictionary(pa.int32(),
                                                                                                      pa.string()))])
    with pq.ParquetWriter(path, schema, **kwargs) as writer:
        for _ in range(groups):
            zeros = pa.array(np.zeros(per, dtype=np.int32))
            writer.write_table(pa.table({
                "text": pa.DictionaryArray.from_arrays(zeros, pa.array([value])),
                "label": pa.DictionaryArray.from_arrays(zeros, pa.array(["a"])),
            }, schema=schema))


def parquet_20m_rows(path: Path) -> None:
    _parquet_rows(path, 20_000_000, "hello world", groups=20, compression="zstd")


def parquet_inflating_pages(path: Path) -> None:
    """Plain (not dictionary) pages of 'x' * 200,000 that zstd shrinks ~1,000 times: 200 MB declared."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("text", pa.string()), ("label", pa.string())])
    with pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=False) as writer:
        for _ in range(100):
            writer.write_table(pa.table({"text": ["x" * 200_000] * 10, "label": ["a"] * 10}, schema=schema))


def parquet_dictionary_bomb(path: Path) -> None:
    """4 million rows pointing at one 50,000-character dictionary value: 200 G characters decoded."""
    _parquet_rows(path, 4_000_000, "y" * 50_000, groups=4, compression="zstd")


def parquet_list_bomb(path: Path) -> None:
    """One row whose list cell holds 2 million references to a 1,000-character value."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    items = pa.DictionaryArray.from_arrays(pa.array(np.zeros(2_000_000, dtype=np.int32)), pa.array(["z" * 1000]))
    labels = pa.ListArray.from_arrays(pa.array([0, 2_000_000], type=pa.int32()), items)
    pq.write_table(pa.table({"text": ["a"], "label": labels}), path, compression="zstd")


def parquet_wide(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({f"c{i}": [1] for i in range(2_000)}), path)


def csv_10mb_cell(path: Path) -> None:
    """Refused once its record passes max_record_chars (2 MiB), before the csv module holds it whole."""
    path.write_bytes(b'text,label\n"' + b"x" * (10 * MiB) + b'",a\nhello,b\n')


def csv_200k_cell(path: Path) -> None:
    path.write_bytes(b'text,label\n"' + b"x" * 200_000 + b'",a\nhello,b\n')


def csv_100k_columns(path: Path) -> None:
    n = 100_000
    path.write_text(",".join(f"c{i}" for i in range(n)) + "\n" + ",".join("v" for _ in range(n)) + "\n")


def csv_30mb_line(path: Path) -> None:
    path.write_bytes(b"text,label\n" + b"a," * (15 * MiB) + b"a\n")


def jsonl_nested(path: Path) -> None:
    path.write_text('{"text": "a", "label": "b", "x": [' + "[]," * 600_000 + "[]]}\n")


def jsonl_30mb_line(path: Path) -> None:
    path.write_text('{"text": "a", "label": "b", "x": [' + "[]," * (10 * MiB) + "[]]}\n")


def json_array_nested(path: Path) -> None:
    path.write_text('[{"text": "a", "label": "b", "x": [' + "[]," * (10 * MiB) + "[]]}]\n")


CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "parquet_20m_rows": ("train.parquet", parquet_20m_rows, "too_many_rows"),
    "parquet_inflating_pages": ("train.parquet", parquet_inflating_pages, "file_too_large_decoded"),
    "parquet_dictionary_bomb": ("train.parquet", parquet_dictionary_bomb, "file_too_large_decoded"),
    "parquet_list_bomb": ("train.parquet", parquet_list_bomb, "file_too_large_decoded"),
    "parquet_2000_columns": ("train.parquet", parquet_wide, "too_many_columns"),
    "csv_10mb_cell": ("train.csv", csv_10mb_cell, "row_too_large"),
    "csv_200k_cell": ("train.csv", csv_200k_cell, "cell_too_large"),
    "csv_100k_columns": ("train.csv", csv_100k_columns, "too_many_columns"),
    "csv_30mb_line": ("train.csv", csv_30mb_line, "row_too_large"),
    "jsonl_nested_values": ("train.jsonl", jsonl_nested, "row_too_large"),
    "jsonl_30mb_line": ("train.jsonl", jsonl_30mb_line, "row_too_large"),
    "json_array_nested_values": ("train.json", json_array_nested, "row_too_large"),
}

# Reads one file in a fresh process: imports and a small read first, so only the hostile read is measured.
_MEASURE = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    from aiaas.core.errors import AiaasError
    from aiaas.data.readers import load_table
    import pyarrow.parquet  # noqa: F401  (imported before the baseline, as a server has it)
    warm = Path(sys.argv[3])
    warm.write_text("text,label\\nhello,a\\n")
    load_table(warm)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cpu, wall = time.process_time(), time.perf_counter()
    code = "accepted"
    try:
        load_table(Path(sys.argv[1]), filename=sys.argv[2])
    except AiaasError as exc:
        code = exc.code
    print(json.dumps({"code": code, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
                      "rss_growth": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before}))
""")


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile")


def _hostile_file(directory: Path, name: str) -> Path:
    filename, build, _code = CASES[name]
    path = directory / f"{name}-{filename}"
    if not path.exists():
        build(path)
    return path


def test_every_code_is_a_400():
    for _filename, _build, code in CASES.values():
        assert HTTP_STATUS[code] == 400


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_reader_refuses_hostile_file_fast_with_bounded_memory(name, hostile_dir, tmp_path):
    filename, _build, code = CASES[name]
    path = _hostile_file(hostile_dir, name)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for key in [k for k in env if k.startswith("AIAAS_MAX_")]:
        del env[key]  # the default limits
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path), filename, str(tmp_path / "warm.csv")],
                         capture_output=True, text=True, env=env, timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{name}: {path.stat().st_size} bytes -> {result}")
    assert result["code"] == code, result
    assert result["cpu_s"] < MAX_CPU_S, result
    assert result["rss_growth"] < MAX_RSS_GROWTH, result


def test_messages_name_the_limit_and_its_setting(hostile_dir):
    expected = {"parquet_20m_rows": "AIAAS_MAX_UPLOAD_ROWS", "csv_200k_cell": "AIAAS_MAX_CELL_CHARS",
                "csv_100k_columns": "AIAAS_MAX_UPLOAD_COLUMNS", "jsonl_nested_values": "AIAAS_MAX_RECORD_CHARS",
                "parquet_inflating_pages": "AIAAS_MAX_EXPANSION_RATIO"}
    for name, setting in expected.items():
        filename, _build, code = CASES[name]
        with pytest.raises(DecodedLimitExceeded) as info:
            load_table(_hostile_file(hostile_dir, name), filename=filename, limits=ReadLimits())
        assert info.value.code == code
        assert setting in info.value.message
        assert info.value.param == "file"


# --- each limit, at small settings, on every text format ------------------------------------------------


def _rows_csv(path: Path, rows: int, text: str = "hello") -> Path:
    path.write_text("text,label\n" + "".join(f"{text} {i},a\n" for i in range(rows)))
    return path


def _rows_jsonl(path: Path, rows: int, text: str = "hello") -> Path:
    path.write_text("".join(json.dumps({"text": f"{text} {i}", "label": "a"}) + "\n" for i in range(rows)))
    return path


def _rows_json(path: Path, rows: int, text: str = "hello") -> Path:
    path.write_text(json.dumps([{"text": f"{text} {i}", "label": "a"} for i in range(rows)]))
    return path


def _rows_parquet(path: Path, rows: int, text: str = "hello") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [f"{text} {i}" for i in range(rows)], "label": ["a"] * rows}), path)
    return path


WRITERS = {"csv": _rows_csv, "jsonl": _rows_jsonl, "json": _rows_json, "parquet": _rows_parquet}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize(("limits", "rows", "text", "code"), [
    (ReadLimits(max_rows=100), 101, "hello", "too_many_rows"),
    (ReadLimits(max_cells=200), 101, "hello", "file_too_large_decoded"),
    (ReadLimits(max_cell_chars=50), 3, "x" * 60, "cell_too_large"),
    (ReadLimits(max_decoded_chars=1000), 200, "hello", "file_too_large_decoded"),
])
def test_each_limit_applies_to_every_format(fmt, limits, rows, text, code, tmp_path):
    path = WRITERS[fmt](tmp_path / f"train.{fmt}", rows, text)
    with pytest.raises(DecodedLimitExceeded) as info:
        load_table(path, limits=limits)
    assert info.value.code == code
    # One under the limit is read.
    assert load_table(WRITERS[fmt](tmp_path / f"ok.{fmt}", 3, "hi"), limits=limits).rows == 3


def test_the_expansion_ratio_applies_past_its_floor(tmp_path):
    path = _rows_parquet(tmp_path / "train.parquet", 20_000, "the same words again " * 3)
    assert load_table(path, limits=ReadLimits()).rows == 20_000  # ~1.3 M characters from a small file
    with pytest.raises(DecodedLimitExceeded) as info:
        load_table(path, limits=ReadLimits(max_expansion_ratio=2))
    assert info.value.code == "file_too_large_decoded" and "AIAAS_MAX_EXPANSION_RATIO" in info.value.message


def test_parquet_page_walk_matches_the_footer(tmp_path):
    """The page headers this reader walks (Thrift, by hand) add up to what the footer says, for data page
    v1 and v2, dictionary and plain pages, and several codecs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aiaas.data.parquet_reader import _walk_pages

    table = pa.table({"text": [f"row {i % 97}" for i in range(50_000)], "n": list(range(50_000)),
                      "tags": [["a", "b"] if i % 2 else [] for i in range(50_000)]})
    for i, kwargs in enumerate([{}, {"data_page_version": "2.0"}, {"use_dictionary": False, "compression": "gzip"},
                                {"compression": "zstd", "data_page_size": 4096, "row_group_size": 7_000},
                                {"write_statistics": False, "compression": "none"}]):
        path = tmp_path / f"t{i}.parquet"
        pq.write_table(table, path, **kwargs)
        meta = pq.read_metadata(path)
        values, inflated = _walk_pages(meta, path, path.stat().st_size, "file")
        chunks = [meta.row_group(g).column(c) for g in range(meta.num_row_groups) for c in range(meta.num_columns)]
        assert values == sum(c.num_values for c in chunks), kwargs
        # The footer's uncompressed size also counts the page headers themselves.
        assert 0 < inflated <= sum(c.total_uncompressed_size for c in chunks), kwargs
        assert load_table(path, limits=ReadLimits()).rows == 50_000


# --- through the API ------------------------------------------------------------------------------------


@pytest.fixture
def settings(settings):
    """Every hostile case is checked before the answer here (this module tests the readers' limits through the
    route). Larger uploads are checked after it, in the background, with the same readers:
    tests/api/test_upload_streaming.py covers that path ending in status "error"."""
    return settings.model_copy(update={"upload_inline_bytes": 64 * MiB})


@SQLITE_ONLY
@pytest.mark.slow
async def test_upload_route_refuses_hostile_files_fast_with_bounded_memory(client, hostile_dir):
    for name, (filename, _build, code) in CASES.items():
        data = _hostile_file(hostile_dir, name).read_bytes()
        # The process's CPU (the route runs in a worker thread) includes the multipart parse of the body, and
        # whatever other threads of this test process do meanwhile (a previous test's background threads, ONNX
        # Runtime's spinning pool): the least of up to three tries, each refused the same way, is the route's.
        used = float("inf")
        for _try in range(3):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            cpu = time.process_time()
            resp = await client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": (filename, data)})
            used = min(used, time.process_time() - cpu)
            growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
            assert resp.status_code == 400, (name, resp.text[:300])
            error = resp.json()["error"]
            assert error["code"] == code, (name, error)
            assert "AIAAS_" in error["message"] and error["param"] == "file", (name, error)
            assert growth < MAX_RSS_GROWTH, (name, growth)
            if used < MAX_CPU_S + 1.0:
                break
        del data
        assert used < MAX_CPU_S + 1.0, (name, used)
    listed = await client.get("/v1/files")
    assert listed.json()["data"] == []  # nothing refused was stored
