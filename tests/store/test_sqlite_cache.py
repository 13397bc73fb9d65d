"""Each pooled SQLite connection's page cache is bounded (aiaas/store/db.py, SQLITE_CACHE_KIB): reading a
database several times that size through the engine leaves SQLite's own memory about the bound larger, where a
connection on SQLite's default keeps ~2,000 KiB (with a pool of connections: the soak's RSS growth after
warm-up as the database grew, bench/README.md "Soak")."""

from __future__ import annotations

import ctypes
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from aiaas.store.db import SQLITE_CACHE_KIB, make_engine


def _memory_used() -> Callable[[], int]:
    """sqlite3_memory_used() of the library Python's sqlite3 module is running on (the same loaded copy)."""
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")
    except OSError:
        pytest.skip("sqlite3 is not a shared libsqlite3 here: its memory cannot be read")
    lib.sqlite3_libversion.restype = ctypes.c_char_p
    if lib.sqlite3_libversion().decode() != sqlite3.sqlite_version:
        pytest.skip("libsqlite3.so.0 is not the library the sqlite3 module uses")
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return lib.sqlite3_memory_used


def _database(path: Path) -> int:
    """A database of ~8 MB (4,000 rows of 2,000 bytes); returns its size in bytes."""
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
        c.executemany("INSERT INTO t (b) VALUES (?)", ((bytes([i % 251]) * 2000,) for i in range(4000)))
    c.close()
    return path.stat().st_size


def test_a_pooled_connection_caches_at_most_the_bound(tmp_path):
    used = _memory_used()
    path = tmp_path / "big.db"
    assert _database(path) > 4 * SQLITE_CACHE_KIB * 1024

    # SQLite's default, for comparison (and to show the measurement sees a page cache at all).
    before = used()
    plain = sqlite3.connect(path)
    assert plain.execute("SELECT sum(length(b)) FROM t").fetchone() == (8_000_000,)
    default_growth = used() - before
    plain.close()

    engine = make_engine(f"sqlite:///{path}")
    try:
        before = used()
        with engine.connect() as c:  # the connection stays open in the pool afterwards, its cache with it
            assert c.execute(text("PRAGMA cache_size")).scalar() == -SQLITE_CACHE_KIB
            for _ in range(3):
                assert c.execute(text("SELECT sum(length(b)) FROM t")).scalar() == 8_000_000
        bounded_growth = used() - before
    finally:
        engine.dispose()
    assert default_growth > 1_500_000, default_growth  # ~2,000 KiB of pages on the default
    # The bound, plus the connection's schema, statements and lookaside (~100-200 KB).
    assert bounded_growth < SQLITE_CACHE_KIB * 1024 + 400_000, (bounded_growth, default_growth)
