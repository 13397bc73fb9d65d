"""Shared fixtures: a real SQLite file, and a real PostgreSQL database per test when
AIAAS_TEST_POSTGRES_URL is set (each test gets its own database, dropped afterwards)."""

from __future__ import annotations

import os
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
    copied from it (CREATE DATABASE ... TEMPLATE, ~0.1 s) instead of each running every migration (~1 s)."""
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


@pytest.fixture
def postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL database; returns its SQLAlchemy URL. Empty, except for a test that also asks
    for `db` (which migrates it to head before the test runs): that one gets a copy of a migrated template."""
    if not POSTGRES_URL:
        pytest.skip("AIAAS_TEST_POSTGRES_URL is not set")
    from sqlalchemy import create_engine, text

    template = request.getfixturevalue("_pg_migrated_template") if "db" in request.fixturenames else None
    admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    name = "aiaas_t_" + uuid.uuid4().hex[:16]
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
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
def db(settings):
    from aiaas.store import migrate
    from aiaas.store.db import Database

    database = Database(settings.sqlalchemy_url)
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
