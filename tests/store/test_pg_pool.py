"""The pool of PostgreSQL test databases (tests/helpers/pg_pool.py) hands back a database only as a fresh copy
of the migrated template would be: rows gone, sessions ended; a changed schema or version gets it dropped."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import POSTGRES_URL, _pg_admin_url, _pg_database_url

pytestmark = pytest.mark.postgres


@pytest.fixture
def pool(_pg_migrated_template):
    if not POSTGRES_URL:
        pytest.skip("AIAAS_TEST_POSTGRES_URL is not set")
    from tests.helpers.pg_pool import PgPool

    admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    p = PgPool(admin, _pg_migrated_template, _pg_database_url)
    yield p
    p.close()
    admin.dispose()


def _run(name: str, sql: str) -> list:
    """Run one statement on database `name`; its rows, or [] for a statement that returns none."""
    engine = create_engine(_pg_database_url(name), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            result = conn.execute(text(sql))
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _exists(name: str) -> bool:
    engine = create_engine(_pg_admin_url())
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": name}).all())
    finally:
        engine.dispose()


def test_rows_are_emptied_sessions_ended_and_the_database_reused(pool):
    name = pool.acquire()
    _run(name, "INSERT INTO organizations (id, name, created_at, settings) VALUES ('org-x', 'x', 0, '{}')")
    assert _run(name, "SELECT count(*) FROM organizations") == [(1,)]
    leftover = create_engine(_pg_database_url(name)).connect()  # a session the test left open
    pool.release(name)
    with pytest.raises(Exception):  # noqa: B017 - ended by the pool, as DROP ... WITH (FORCE) ended it
        leftover.execute(text("SELECT 1"))
    leftover.invalidate()
    again = pool.acquire()
    assert again == name
    assert _run(name, "SELECT count(*) FROM organizations") == [(0,)]
    assert _run(name, "SELECT count(*) FROM alembic_version") == [(1,)]  # the seeded row stays
    pool.release(name)


@pytest.mark.parametrize("change", [
    "CREATE TABLE scratch (x int)",
    "ALTER TABLE organizations ADD COLUMN extra int",
    "CREATE INDEX ix_scratch ON organizations (name)",
    "UPDATE alembic_version SET version_num = 'elsewhere'",
    "CREATE SEQUENCE seq_scratch",
])
def test_a_database_that_differs_from_the_template_is_dropped(pool, change):
    name = pool.acquire()
    _run(name, change)
    pool.release(name)
    assert not _exists(name) and name not in pool.free
    fresh = pool.acquire()
    assert fresh != name
    assert _run(fresh, "SELECT count(*) FROM alembic_version WHERE version_num <> 'elsewhere'") == [(1,)]
    pool.release(fresh)


def test_close_drops_every_database(pool):
    names = [pool.acquire(), pool.acquire()]
    pool.release(names[0])
    pool.close()
    assert not any(_exists(n) for n in names)
