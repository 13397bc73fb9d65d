"""Engine and session set-up: SQLite in WAL mode with a busy timeout, PostgreSQL by URL."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 10_000
# Each pooled SQLite connection keeps its own page cache, filled by what it reads (SQLite's default: up to
# 2,000 KiB). A file database's pool holds 5 connections (more while busy), so the API process grew by up to
# ~10 MB as the database grew: the soak's RSS growth after warm-up (bench/README.md, "Soak"). In WAL mode a
# connection drops its cache whenever another connection has written, so a larger cache buys little here.
SQLITE_CACHE_KIB = 512
# PostgreSQL's retryable lock outcomes: lock_not_available, deadlock_detected, serialization_failure.
_PG_BUSY_STATES = frozenset({"55P03", "40P01", "40001"})


def rows_changed(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE changed. Session.execute is typed as giving a Result; for these
    statements SQLAlchemy gives its CursorResult subclass, the one with rowcount."""
    return cast("CursorResult[Any]", result).rowcount


def is_busy(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) is the database refusing for contention, not for the request:
    SQLite still locked after the busy timeout, or a PostgreSQL lock/deadlock/serialization failure. The
    transaction was rolled back, so the request can be retried unchanged (the edge answers 503)."""
    seen: BaseException | None = exc
    for _ in range(5):  # the DB-API error, wrapped by SQLAlchemy, perhaps wrapped again
        if seen is None:
            return False
        orig = getattr(seen, "orig", None) or seen
        if type(orig).__module__.startswith("sqlite3") and "locked" in str(orig):
            return True
        if getattr(orig, "sqlstate", None) in _PG_BUSY_STATES:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _sqlite_pragmas(dbapi_conn: Any, _record: object) -> None:  # a DB-API connection (sqlite3)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")  # negative: KiB, not pages
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class Database:
    """An engine plus a session factory; one per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on error."""
        with self.sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()
