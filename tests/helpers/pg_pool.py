"""PostgreSQL databases at the migrations' head, reused between the tests of one test process.

Making a database per test (CREATE DATABASE ... TEMPLATE, then DROP DATABASE ... WITH (FORCE)) cost ~0.3-0.4 s
a test, with spikes past 2 s on a loaded machine, and some 300 PostgreSQL tests ask for `db`. A pooled
database is handed back clean instead: its other sessions are ended (what DROP ... WITH (FORCE) did to a test's
leftover connections), every table the template holds empty is emptied (DELETE with triggers off: on tables of a
few rows it is milliseconds, where TRUNCATE creates new files for each table and index), and its schema is
compared with the template's. A database whose schema, migration version or seeded rows no longer match the
template's is dropped, and the next test gets a fresh copy: a test sees what a fresh copy would show it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import Engine, create_engine, text

# What must be equal to the template's for a database to be reused: tables and columns, every index and
# constraint, sequences (and their positions), views, functions, triggers, and the rows of the tables the migrations seed.
SCHEMA = """
SELECT 't:' || table_name || '.' || column_name || ':' || data_type || ':' || is_nullable || ':'
       || coalesce(column_default, '') FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL SELECT 'i:' || indexname || ':' || indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL SELECT 'c:' || conname || ':' || pg_get_constraintdef(oid) FROM pg_constraint
       WHERE connamespace = 'public'::regnamespace
UNION ALL SELECT 's:' || sequencename || ':' || coalesce(last_value::text, '') FROM pg_sequences
       WHERE schemaname = 'public'
UNION ALL SELECT 'v:' || viewname FROM pg_views WHERE schemaname = 'public'
UNION ALL SELECT 'f:' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
UNION ALL SELECT 'g:' || tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
       WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal
UNION ALL SELECT 'n:' || nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
"""


def _tables(conn) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(r[0] for r in conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")))


def _rows(conn, table: str) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(str(r) for r in conn.execute(text(f'SELECT * FROM "{table}"')))


class Fingerprint:
    """The template's schema, its empty tables, and the rows of the others."""

    def __init__(self, conn) -> None:  # type: ignore[no-untyped-def]
        self.schema = sorted(r[0] for r in conn.execute(text(SCHEMA)))
        self.empty: list[str] = []
        self.seeded: dict[str, list[str]] = {}
        for table in _tables(conn):
            rows = _rows(conn, table)
            if rows:
                self.seeded[table] = rows
            else:
                self.empty.append(table)

    def matches(self, conn) -> bool:  # type: ignore[no-untyped-def]
        return sorted(r[0] for r in conn.execute(text(SCHEMA))) == self.schema and all(
            _rows(conn, t) == rows for t, rows in self.seeded.items()
        )


class PgPool:
    """Copies of `template`, each handed to one test at a time (`acquire`, then `release`)."""

    def __init__(self, admin: Engine, template: str, url_of: Callable[[str], str]) -> None:
        self.admin, self.template, self.url_of = admin, template, url_of
        self.free: list[str] = []
        self.all: set[str] = set()
        engine = create_engine(url_of(template))
        try:
            with engine.connect() as conn:
                self.fingerprint = Fingerprint(conn)
        finally:
            engine.dispose()  # a template must have no open connection while it is copied

    def acquire(self) -> str:
        """The name of a database at head, holding only what the template holds."""
        if self.free:
            return self.free.pop()
        name = "aiaas_t_" + uuid.uuid4().hex[:16]
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self.all.add(name)
        return name

    def release(self, name: str) -> None:
        """Clean `name` for the next test, or drop it where it cannot be made equal to a fresh copy."""
        with self.admin.connect() as conn:  # the test's leftover sessions (servers it started, leaked pools)
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": name})
        if self._clean(name):
            self.free.append(name)
        else:
            self._drop(name)

    def _clean(self, name: str) -> bool:
        engine = create_engine(self.url_of(name))
        try:
            with engine.connect() as conn, conn.begin():
                conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                conn.execute(text("SET LOCAL session_replication_role = replica"))  # no FK order needed
                if not self.fingerprint.matches(conn) or _tables(conn) != sorted(
                        self.fingerprint.empty + list(self.fingerprint.seeded)):
                    return False
                for table in self.fingerprint.empty:
                    conn.execute(text(f'DELETE FROM "{table}"'))
            return True
        except Exception:  # noqa: BLE001 - any doubt: the database is dropped, the next test gets a fresh copy
            return False
        finally:
            engine.dispose()

    def _drop(self, name: str) -> None:
        self.all.discard(name)
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        for name in list(self.all):
            self._drop(name)
        self.free.clear()
