"""Limits on what an upload decodes to, and the running count every reader keeps against them.

Bytes on the wire say little about the memory and time a file costs: a 133 KB Parquet file
can declare 20 million rows, a dictionary page can repeat one long string for every row, a
JSON line of `[[],[],...]` costs ~20 bytes of memory per byte. So every reader counts what it
decodes as it goes (rows, columns, cells, characters per cell and per record, characters in
all) and stops at the first limit, with an error whose code says which limit and whose
message names the AIAAS_ setting that changes it. Parquet is checked from its footer and page
headers before any data is decompressed (aiaas/data/parquet_limits.py).

"Decoded characters" count one per cell (the separator a CSV would need) plus the cell's text,
so a file of many empty cells is as large as its CSV would be.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiaas.core.errors import DecodedLimitExceeded

if TYPE_CHECKING:
    from aiaas.core.settings import Settings

# Below this many decoded characters the expansion ratio is not checked: a small file costs little
# whatever its ratio, and Parquet's footer alone can outweigh a handful of rows.
RATIO_FLOOR_CHARS = 1024 * 1024


@dataclass(frozen=True)
class ReadLimits:
    """The limits one read is held to (from Settings; see the AIAAS_MAX_* settings)."""

    max_rows: int = 5_000_000
    max_columns: int = 1_000
    max_cells: int = 10_000_000
    max_cell_chars: int = 100_000
    max_record_chars: int = 2 * 1024 * 1024
    max_decoded_chars: int = 4 * 512 * 1024 * 1024
    max_expansion_ratio: float = 100.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadLimits:
        return cls(
            max_rows=settings.max_upload_rows,
            max_columns=settings.max_upload_columns,
            max_cells=settings.max_upload_cells,
            max_cell_chars=settings.max_cell_chars,
            max_record_chars=settings.max_record_chars,
            max_decoded_chars=settings.max_decoded_chars,
            max_expansion_ratio=settings.max_expansion_ratio,
        )

    @classmethod
    def current(cls) -> ReadLimits:
        """The process's limits (its environment); callers with their own Settings pass from_settings."""
        from aiaas.core.settings import get_settings

        return cls.from_settings(get_settings())


def too_many_rows(n: int | str, limits: ReadLimits, param: str) -> DecodedLimitExceeded:
    return DecodedLimitExceeded(
        f"the file holds {n} rows; at most {limits.max_rows} are accepted (AIAAS_MAX_UPLOAD_ROWS). "
        "Split it, or sample it, and upload the part you need.",
        param=param, code="too_many_rows",
    )


def too_many_columns(n: int | str, where: str, limits: ReadLimits, param: str) -> DecodedLimitExceeded:
    return DecodedLimitExceeded(
        f"{where}: {n} columns; at most {limits.max_columns} are accepted (AIAAS_MAX_UPLOAD_COLUMNS). Keep "
        "the text and label columns (and few others) in the training file.",
        param=param, code="too_many_columns",
    )


def cell_too_large(n: int | str, where: str, limits: ReadLimits, param: str) -> DecodedLimitExceeded:
    return DecodedLimitExceeded(
        f"{where}: a cell holds {n} characters; at most {limits.max_cell_chars} are accepted "
        "(AIAAS_MAX_CELL_CHARS). Shorten the text, or check for a quote that is never closed.",
        param=param, code="cell_too_large",
    )


def row_too_large(what: str, where: str, limits: ReadLimits, param: str) -> DecodedLimitExceeded:
    return DecodedLimitExceeded(
        f"{where}: the record holds {what}; at most {limits.max_record_chars} characters and "
        f"{limits.max_columns} values (nested list items included) are accepted per record "
        "(AIAAS_MAX_RECORD_CHARS, AIAAS_MAX_UPLOAD_COLUMNS). Flatten nested values and shorten long text.",
        param=param, code="row_too_large",
    )


def too_large_decoded(what: str, limits: ReadLimits, param: str, setting: str) -> DecodedLimitExceeded:
    return DecodedLimitExceeded(
        f"the file decodes to {what} ({setting}); upload less data, or store repeated values once.",
        param=param, code="file_too_large_decoded",
    )


class Budget:
    """Running totals for one read: cells and decoded characters, checked at every add."""

    def __init__(self, limits: ReadLimits, file_bytes: int, param: str) -> None:
        self.limits = limits
        self.file_bytes = max(file_bytes, 1)
        self.param = param
        self.cells = 0
        self.chars = 0
        # The tightest of the character limits, so add() compares against one number.
        ratio_cap = max(int(limits.max_expansion_ratio * self.file_bytes), RATIO_FLOOR_CHARS)
        self._char_cap = min(limits.max_decoded_chars, ratio_cap)

    def add(self, cells: int, chars: int) -> None:
        """Count `cells` more cells holding `chars` characters of text between them."""
        self.cells += cells
        self.chars += chars + cells
        if self.cells > self.limits.max_cells:
            raise too_large_decoded(
                f"more than {self.limits.max_cells} cells; at most that many are accepted",
                self.limits, self.param, "AIAAS_MAX_UPLOAD_CELLS",
            )
        if self.chars > self._char_cap:
            raise self.chars_error(self.chars)

    def check_declared(self, chars: int) -> None:
        """Refuse before reading when the file itself declares more than the limits allow."""
        if chars > self._char_cap:
            raise self.chars_error(chars, declared=True)

    def chars_error(self, chars: int, *, declared: bool = False) -> DecodedLimitExceeded:
        verb = "declares" if declared else "reaches"
        if chars > self.limits.max_decoded_chars:
            return too_large_decoded(
                f"more than {self.limits.max_decoded_chars} characters (it {verb} {chars}); at most that many "
                "are accepted", self.limits, self.param, "AIAAS_MAX_DECODED_CHARS",
            )
        ratio = chars / self.file_bytes
        return too_large_decoded(
            f"{ratio:.0f} times its {self.file_bytes} bytes (it {verb} {chars} characters); at most "
            f"{self.limits.max_expansion_ratio:g} times is accepted", self.limits, self.param,
            "AIAAS_MAX_EXPANSION_RATIO",
        )
