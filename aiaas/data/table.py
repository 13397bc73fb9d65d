"""The Table every reader produces: the columns asked for, and where each row came from in the file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiaas.data.types import Format


@dataclass
class Table:
    """Parsed rows, column by column. `data` holds only the columns that were asked for."""

    format: Format
    encoding: str | None
    columns: list[str]
    data: dict[str, list[Any]]
    positions: list[int]
    unit: str  # "line" for CSV/JSONL, "row" for Parquet, "record" for a JSON array

    @property
    def rows(self) -> int:
        return len(self.positions)

    def where(self, i: int) -> str:
        """'line 17' for the i-th row, as error messages put it."""
        return f"{self.unit} {self.positions[i]}"
