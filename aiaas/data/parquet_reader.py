"""Read a Parquet upload under ReadLimits: refuse from the footer and page headers, then read in batches.

A Parquet file says what it holds before any of it is decoded: the footer gives the rows,
columns and (declared) sizes, and each page starts with a header giving the size it
decompresses to and how many values it holds. The footer can lie, but the page headers are
what the decoder allocates by (Arrow refuses a page that decompresses to another size), so
both are checked before a byte of data is decompressed: a 133 KB file declaring 20 million
rows, or a page that inflates 1,000 times, is refused in milliseconds.

What the headers cannot bound is dictionary expansion (one long string referenced by every
row), so string columns are read as dictionaries, batch by batch, and each batch's lengths are
counted (vectorised, on the dictionary and its indices) before its values become Python objects.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiaas.core.errors import InvalidFile
from aiaas.data.formats import subject
from aiaas.data.limits import (
    Budget,
    ReadLimits,
    cell_too_large,
    too_large_decoded,
    too_many_columns,
    too_many_rows,
)

if TYPE_CHECKING:
    import pyarrow as pa

# Walking page headers is Python work; a file cut into this many pages is refused rather than walked
# (pyarrow writes 1 MiB pages: a 512 MiB file has ~600).
MAX_PAGES = 200_000
_DICTIONARY_PAGE = 2


def read_parquet(path: Path, param: str, keep: set[str] | None, limits: ReadLimits) -> tuple[
    list[str], dict[str, list[Any]], int
]:
    """(column names, the kept columns' values, row count) of the Parquet file at `path`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    size = path.stat().st_size
    budget = Budget(limits, size, param)
    try:
        meta = pq.read_metadata(path)
        _check_declared(meta, path, size, budget, param)
        leaves = [meta.schema.column(i) for i in range(meta.num_columns)]
        as_dictionary = [c.path for c in leaves if c.physical_type == "BYTE_ARRAY"
                         and c.logical_type.type in ("STRING", "NONE", "JSON", "ENUM", "BSON")]
        with pq.ParquetFile(path, read_dictionary=as_dictionary) as parquet:
            # pandas stores its index as "__index_level_0__"; it is not the user's data.
            present = [n for n in parquet.schema_arrow.names if not str(n).startswith("__index_level_")]
            if len(present) > limits.max_columns:
                raise too_many_columns(len(present), subject(param), limits, param)
            wanted = [n for n in present if keep is None or str(n) in keep]
            data: dict[str, list[Any]] = {str(n): [] for n in wanted}
            rows = meta.num_rows
            if wanted:
                # A row group at a time (iter_batches cannot give nested dictionary columns across
                # pages): its pages are bounded by the checks above, and strings stay dictionaries
                # (indices and one copy of each value) until counted.
                row = 0
                for g in range(meta.num_row_groups):
                    group = parquet.read_row_group(g, columns=wanted, use_threads=False)
                    for name, column in zip(wanted, group.columns, strict=True):
                        at = row
                        for chunk in column.chunks:
                            cells, chars = _measure(chunk, at, str(name), limits, param)
                            budget.add(cells, chars)
                            at += len(chunk)
                    for name, column in zip(wanted, group.columns, strict=True):
                        data[str(name)].extend(column.to_pylist())
                    row += group.num_rows
                    del group
                rows = row
    except (pa.ArrowException, OSError) as exc:
        raise InvalidFile(
            f"{subject(param)} could not be read as Parquet ({exc}); re-export it, or upload a CSV instead.",
            param=param,
        ) from None
    return [str(n) for n in present], data, rows


def _check_declared(meta: Any, path: Path, size: int, budget: Budget, param: str) -> None:
    """Rows, columns, cells and decompressed bytes as the footer and page headers state them."""
    limits = budget.limits
    if meta.num_rows > limits.max_rows:
        raise too_many_rows(meta.num_rows, limits, param)
    if meta.num_columns > limits.max_columns:
        raise too_many_columns(meta.num_columns, subject(param), limits, param)
    declared_values = declared_bytes = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        declared_bytes += group.total_byte_size
        for c in range(group.num_columns):
            declared_values += group.column(c).num_values
    _check_totals(declared_values, declared_bytes, budget, limits, param)
    values, inflated = _walk_pages(meta, path, size, param)
    _check_totals(values, inflated, budget, limits, param)


def _check_totals(values: int, inflated: int, budget: Budget, limits: ReadLimits, param: str) -> None:
    if values > limits.max_cells:
        raise too_large_decoded(f"{values} values; at most {limits.max_cells} cells are accepted", limits,
                                param, "AIAAS_MAX_UPLOAD_CELLS")
    budget.check_declared(inflated)


def _walk_pages(meta: Any, path: Path, size: int, param: str) -> tuple[int, int]:
    """(values, decompressed bytes) summed over every page header of every column chunk."""
    values = inflated = pages = 0
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                start = chunk.data_page_offset
                if chunk.has_dictionary_page and chunk.dictionary_page_offset:
                    start = min(start, chunk.dictionary_page_offset)
                end = start + chunk.total_compressed_size
                if start < 4 or end > size or start >= end:
                    raise _corrupt(param, f"column chunk {c} of row group {g} lies outside the file")
                pos = start
                while pos < end:
                    pages += 1
                    if pages > MAX_PAGES:
                        raise _corrupt(param, f"more than {MAX_PAGES} pages")
                    header = _PageHeader(buf, pos, end, param)
                    if header.uncompressed < 0 or header.compressed < 0:
                        raise _corrupt(param, "a page header gives a negative size")
                    inflated += header.uncompressed
                    if header.type != _DICTIONARY_PAGE:
                        values += header.num_values
                    pos = header.end + header.compressed
    return values, inflated


def _corrupt(param: str, why: str) -> InvalidFile:
    return InvalidFile(
        f"{subject(param)} could not be read as Parquet ({why}); re-export it, or upload a CSV instead.",
        param=param,
    )


class _PageHeader:
    """The fields of a Thrift (compact protocol) PageHeader that bound what decoding a page costs."""

    def __init__(self, buf: mmap.mmap, pos: int, limit: int, param: str) -> None:
        self.buf, self.pos, self.limit, self.param = buf, pos, limit, param
        self.type = self.uncompressed = self.compressed = self.num_values = 0
        last = 0
        while True:
            field, kind, last = self._field_header(last)
            if kind == 0:
                break
            if field in (1, 2, 3) and kind == 5:
                value = self._varint_signed()
                if field == 1:
                    self.type = value
                elif field == 2:
                    self.uncompressed = value
                else:
                    self.compressed = value
            elif field in (5, 7, 8) and kind == 12:
                # data_page_header, dictionary_page_header, data_page_header_v2: field 1 is num_values.
                inner = 0
                while True:
                    sub, sub_kind, inner = self._field_header(inner)
                    if sub_kind == 0:
                        break
                    if sub == 1 and sub_kind == 5:
                        self.num_values = self._varint_signed()
                    else:
                        self._skip(sub_kind, 0)
            else:
                self._skip(kind, 0)
        self.end = self.pos

    def _byte(self) -> int:
        if self.pos >= self.limit:
            raise _corrupt(self.param, "a page header runs past its column chunk")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def _varint(self) -> int:
        shift = result = 0
        while True:
            b = self._byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise _corrupt(self.param, "a page header holds an overlong integer")

    def _varint_signed(self) -> int:
        n = self._varint()
        return (n >> 1) ^ -(n & 1)

    def _field_header(self, last: int) -> tuple[int, int, int]:
        b = self._byte()
        kind = b & 0x0F
        if kind == 0:
            return 0, 0, last
        delta = b >> 4
        field = last + delta if delta else self._varint_signed()
        return field, kind, field

    def _skip(self, kind: int, depth: int) -> None:
        if depth > 32:
            raise _corrupt(self.param, "a page header is nested too deeply")
        if kind in (1, 2):  # booleans live in the field header
            return
        if kind == 3:
            self._byte()
        elif kind in (4, 5, 6):
            self._varint()
        elif kind == 7:
            self._advance(8)
        elif kind == 8:
            self._advance(self._varint())
        elif kind in (9, 10):
            b = self._byte()
            n = b >> 4
            if n == 15:
                n = self._varint()
            for _ in range(n):
                self._skip_element(b & 0x0F, depth + 1)
        elif kind == 11:
            n = self._varint()
            if n:
                types = self._byte()
                for _ in range(n):
                    self._skip_element(types >> 4, depth + 1)
                    self._skip_element(types & 0x0F, depth + 1)
        elif kind == 12:
            last = 0
            while True:
                _, sub_kind, last = self._field_header(last)
                if sub_kind == 0:
                    return
                self._skip(sub_kind, depth + 1)
        else:
            raise _corrupt(self.param, f"a page header holds an unknown Thrift type {kind}")

    def _skip_element(self, kind: int, depth: int) -> None:
        if kind in (1, 2):  # a boolean element is one byte
            self._byte()
        else:
            self._skip(kind, depth)

    def _advance(self, n: int) -> None:
        if n < 0 or self.pos + n > self.limit:
            raise _corrupt(self.param, "a page header runs past its column chunk")
        self.pos += n


# --- counting a batch before it becomes Python objects -----------------------------------------------


def _measure(array: pa.Array, row: int, name: str, limits: ReadLimits, param: str) -> tuple[int, int]:
    """(cells, characters) in `array`; refuses a string longer than max_cell_chars."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    cells = len(array)
    if pa.types.is_dictionary(kind):
        lengths = _lengths(array.dictionary)
        if lengths is None:
            return cells, 0
        lengths = pc.take(lengths, array.indices)
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        inner_cells, chars = _measure(array.flatten(), row, name, limits, param)
        return cells + inner_cells, chars
    elif pa.types.is_map(kind):
        keys = _measure(array.keys, row, name, limits, param)
        items = _measure(array.items, row, name, limits, param)
        return cells + keys[0] + items[0], keys[1] + items[1]
    elif pa.types.is_struct(kind):
        chars = 0
        for i in range(kind.num_fields):
            inner_cells, inner_chars = _measure(array.field(i), row, name, limits, param)
            cells += inner_cells
            chars += inner_chars
        return cells, chars
    else:
        lengths = _lengths(array)
        if lengths is None:
            return cells, 0
    longest = pc.max(lengths).as_py() or 0
    if longest > limits.max_cell_chars:
        at = pc.index(pc.greater(lengths, limits.max_cell_chars), True).as_py()
        where = f"column {name!r}" + (f", row {row + at + 1}" if at >= 0 and at < cells else "")
        raise cell_too_large(longest, where, limits, param)
    return cells, int(pc.sum(lengths).as_py() or 0)


def _lengths(array: pa.Array) -> pa.Array | None:
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pc.utf8_length(array)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return pc.binary_length(array)
    return None
