"""A database that stays locked past its busy timeout answers a retryable 503 `database_busy`, not a 500.

Seen under chaos R4 on a loaded 2-core machine: 100 concurrent POSTs on SQLite, one writer starved of CPU past
the 10 s busy timeout, and the others answered 500 `internal_error`. Here another connection holds SQLite's
write lock (BEGIN IMMEDIATE) while the API tries to write, with the busy timeout cut to 0.2 s.
"""

from __future__ import annotations

import sqlite3

import pytest

from aiaas.store import db as store_db
from aiaas.store.db import is_busy


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_locked_database_answers_503_database_busy_and_the_retry_succeeds(client, org_a, settings, db,
                                                                                    monkeypatch):
    monkeypatch.setattr(store_db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    client_db = settings.database_url.split("///", 1)[1]
    db.engine.dispose()  # the app's pool: connections made from now on take the short timeout
    holder = sqlite3.connect(client_db, timeout=0.1, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held until ROLLBACK
    try:
        busy = await client.post("/v1/api_keys", headers=org_a.headers, json={"name": "k", "scopes": ["read"]})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert busy.status_code == 503, busy.text
    assert busy.json()["error"]["code"] == "database_busy"
    assert busy.headers["retry-after"] == "1"
    assert "retry" in busy.json()["error"]["message"].lower()
    again = await client.post("/v1/api_keys", headers=org_a.headers, json={"name": "k", "scopes": ["read"]})
    assert again.status_code == 201, again.text
    listed = (await client.get("/v1/api_keys", headers=org_a.headers)).json()["data"]
    assert [k["name"] for k in listed].count("k") == 1  # the refused attempt wrote nothing


def test_is_busy_tells_contention_from_faults():
    from sqlalchemy.exc import IntegrityError, OperationalError

    locked = OperationalError("UPDATE t", {}, sqlite3.OperationalError("database is locked"))
    assert is_busy(locked)
    try:
        try:
            raise locked
        except OperationalError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert is_busy(outer)
    assert not is_busy(OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: t")))
    assert not is_busy(IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed")))

    class PgError(Exception):
        sqlstate = "40P01"  # deadlock_detected

    assert is_busy(OperationalError("UPDATE t", {}, PgError("deadlock detected")))
    assert not is_busy(ValueError("database is locked"))  # the words alone are not the database's error
