"""Cursor pagination over sortable ids (`after=<id>`, `limit`, `order`)."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

from aiaas.core.errors import InvalidRequest

T = TypeVar("T")
Order = Literal["asc", "desc"]


def page(
    session: Session,
    stmt: Select[Any],
    id_column: Any,
    *,
    after: str | None,
    limit: int,
    order: Order = "desc",
    max_limit: int = 100,
) -> tuple[list[Any], bool]:
    """Return (rows, has_more). Ids sort by creation time, so the id alone is the cursor."""
    if not 1 <= limit <= max_limit:
        raise InvalidRequest(f"limit must be between 1 and {max_limit}; got {limit}.", param="limit")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'.", param="order")
    if after is not None:
        stmt = stmt.where(id_column < after if order == "desc" else id_column > after)
    stmt = stmt.order_by(id_column.desc() if order == "desc" else id_column.asc()).limit(limit + 1)
    rows = list(session.scalars(stmt))
    return rows[:limit], len(rows) > limit
