"""Shared fixtures: a real SQLite file, and a real PostgreSQL database per test when
AIAAS_TEST_POSTGRES_URL is set (an empty one made and dropped per test, or for `db`, a pooled copy of the
migrated template handed over clean).

A test that asks for `db` gets a database at the migrations' head without running them: a copy of a template
migrated once per test process (a file copy on SQLite, CREATE DATABASE ... TEMPLATE on PostgreSQL). Running every
migration costs ~0.3-1 s a test, and some 600 tests ask for `db`. The migrations themselves are tested where they
are the subject (tests/store, `aiaas init`/`aiaas db upgrade` and the servers' start in tests/cli and tests/e2e).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POSTGRES_URL = os.environ.get("AIAAS_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("AIAAS_TEST_REDIS_URL")
TEST_SECRET = "test-secret-" + "x" * 40

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _pg_admin_url() -> str:
    assert POSTGRES_URL
    url = POSTGRES_URL
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _pg_database_url(name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(_pg_admin_url()).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def _pg_migrated_template() -> Iterator[str]:
    """A PostgreSQL database migrated to head once per test process: the `db` fixture's databases are
    copied from it (CREATE DATABASE ... TEMPLATE, ~0.1 s) instead of each running every migration (~1 s), and
    reused between tests (tests/helpers/pg_pool.py)."""
    from sqlalchemy import create_engine, text

    from aiaas.store import migrate
    from aiaas.store.db import Database

    admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    name = "aiaas_tpl_" + uuid.uuid4().hex[:16]
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        database = Database(_pg_database_url(name))
        migrate.upgrade(database.engine)
        database.dispose()  # a template must have no open connection while it is copied
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# URLs of this process's PostgreSQL databases copied from the migrated template: `db` need not migrate them.
_AT_HEAD: set[str] = set()


@pytest.fixture(scope="session")
def _sqlite_migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per test process, for `db` to copy (~1 ms) instead of migrating."""
    from aiaas.store import migrate
    from aiaas.store.db import Database

    path = tmp_path_factory.mktemp("sqlite-template") / "aiaas.db"
    database = Database(f"sqlite:///{path}")
    migrate.upgrade(database.engine)
    database.dispose()  # the last connection's close checkpoints the WAL into the file
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert not leftovers, f"the template must be one self-contained file: {leftovers}"
    return path


def _new_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL when it does not exist yet (the case `db` may fill from the template)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


@pytest.fixture(scope="session")
def _pg_pool(_pg_migrated_template: str) -> Iterator[Any]:
    """This process's reusable copies of the migrated template (tests/helpers/pg_pool.py)."""
    from sqlalchemy import create_engine

    from tests.helpers.pg_pool import PgPool

    admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    pool = PgPool(admin, _pg_migrated_template, _pg_database_url)
    try:
        yield pool
    finally:
        pool.close()
        admin.dispose()


@pytest.fixture
def postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A PostgreSQL database; returns its SQLAlchemy URL. A fresh empty one, dropped afterwards, except for a
    test that also asks for `db`: that one gets a copy of the migrated template from this process's pool, holding
    only what a fresh copy holds (tests/helpers/pg_pool.py)."""
    if not POSTGRES_URL:
        pytest.skip("AIAAS_TEST_POSTGRES_URL is not set")
    if "db" in request.fixturenames:
        pool = request.getfixturevalue("_pg_pool")
        name = pool.acquire()
        url = _pg_database_url(name)
        _AT_HEAD.add(url)
        try:
            yield url
        finally:
            _AT_HEAD.discard(url)
            pool.release(name)
        return
    from sqlalchemy import create_engine, text

    admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    name = "aiaas_t_" + uuid.uuid4().hex[:16]
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield _pg_database_url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'aiaas.db'}"
    return request.getfixturevalue("postgres_database")


@pytest.fixture
def settings(tmp_path: Path, database_url: str):
    from aiaas.core.settings import Settings

    return Settings(
        env="test",
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key=TEST_SECRET,
        job_workers=0,
    )


@pytest.fixture
def db(settings, request: pytest.FixtureRequest):
    """The settings' database at the migrations' head: a copy of a migrated template where it can be one."""
    from aiaas.store import migrate
    from aiaas.store.db import Database

    url = settings.sqlalchemy_url
    at_head = url in _AT_HEAD
    new_file = _new_sqlite_file(url)
    if new_file is not None:
        new_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(request.getfixturevalue("_sqlite_migrated_template"), new_file)
        at_head = True
    database = Database(url)
    if not at_head:
        migrate.upgrade(database.engine)
    yield database
    database.dispose()


# ---- How `make test` shares the suite between its two xdist workers: tests/helpers/scheduling.py ----
@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadfile":
        return None
    from tests.helpers.scheduling import FileOrBackendScheduling

    return FileOrBackendScheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput") and config.getvalue("dist") == "loadfile":  # on xdist workers only
        from tests.helpers.scheduling import longest_units_first

        items[:] = longest_units_first(items, config)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    from tests.helpers.scheduling import record

    record(report)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):
        from tests.helpers.scheduling import save

        save(session.config)
