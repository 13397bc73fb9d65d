"""Migrations reach head on empty SQLite and PostgreSQL, and match the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from aiaas.store import migrate
from aiaas.store.db import Database
from aiaas.store.models import Base


def test_upgrade_empty_database_to_head_and_no_diff(database_url):
    db = Database(database_url)
    try:
        migrate.upgrade(db.engine)
        head = ScriptDirectory.from_config(migrate.alembic_config(db.engine)).get_current_head()
        assert migrate.current_revision(db.engine) == head
        assert set(Base.metadata.tables) <= set(inspect(db.engine).get_table_names())
        with db.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
        # Upgrading twice is a no-op.
        migrate.upgrade(db.engine)
    finally:
        db.dispose()


def test_sqlite_uses_wal_and_busy_timeout(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()
