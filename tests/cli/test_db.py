"""`aiaas db upgrade` migrates explicitly; a production server refuses a database that is not current.

In process: create_app with AIAAS_ENV=production/development on real SQLite files (and PostgreSQL where the
fixtures provide it). As processes: `aiaas serve` in production on an un-migrated data dir exits with the
error that says to run `aiaas db upgrade`, and starts once it has run.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aiaas.api.app import create_app
from aiaas.cli.main import app as cli_app
from aiaas.core.errors import ConfigurationError
from aiaas.core.settings import Settings
from aiaas.store import migrate
from aiaas.store.db import Database
from tests.conftest import TEST_SECRET

FIRST = "0001"  # the initial schema: a database an older version left


def settings_for(database_url: str, data_dir: Path, env: str) -> Settings:
    return Settings(env=env, data_dir=data_dir, database_url=database_url, secret_key=TEST_SECRET, job_workers=0)


def test_production_refuses_an_unmigrated_database(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(database_url, tmp_path / "data", "production")
    db = Database(settings.sqlalchemy_url)
    try:
        with pytest.raises(ConfigurationError) as e:
            create_app(settings, db=db)
        assert "has never been migrated" in e.value.message and "aiaas db upgrade" in e.value.message
        assert e.value.param == "database_url"
        assert migrate.current_revision(db.engine) is None  # it did not migrate behind the operator's back

        migrate.upgrade(db.engine, FIRST)  # as a database left by the previous version
        with pytest.raises(ConfigurationError) as e:
            create_app(settings, db=db)
        assert f"is at revision {FIRST}, older than" in e.value.message and "aiaas db upgrade" in e.value.message
        assert migrate.current_revision(db.engine) == FIRST

        migrate.upgrade(db.engine)
        assert create_app(settings, db=db) is not None
    finally:
        db.dispose()


def test_development_and_test_still_migrate_at_start(database_url: str, tmp_path: Path) -> None:
    for env in ("development", "test"):
        settings = settings_for(database_url, tmp_path / env, env)
        db = Database(settings.sqlalchemy_url)
        try:
            if migrate.current_revision(db.engine) is None:
                create_app(settings, db=db)
            assert migrate.current_revision(db.engine) in migrate.head_revisions()
        finally:
            db.dispose()


def test_a_revision_from_a_newer_version_is_named(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "data", "production")
    db = Database(settings.sqlalchemy_url)
    try:
        migrate.upgrade(db.engine)
        with db.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_from_the_future'")
        with pytest.raises(ConfigurationError) as e:
            migrate.check_current(db.engine)
        assert "9999_from_the_future" in e.value.message and "newer version" in e.value.message
    finally:
        db.dispose()


def test_db_upgrade_and_current_commands(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("AIAAS_DATA_DIR", str(data))
    monkeypatch.delenv("AIAAS_DATABASE_URL", raising=False)
    runner = CliRunner()

    before = runner.invoke(cli_app, ["db", "current", "--json"])
    assert before.exit_code == 1, before.output
    assert json.loads(before.stdout) == {"current": None, "heads": list(migrate.head_revisions()),
                                         "up_to_date": False}

    up = runner.invoke(cli_app, ["db", "upgrade"])
    assert up.exit_code == 0, up.output
    assert "database upgraded from (empty) to" in up.output
    assert (data / "aiaas.db").is_file()

    again = runner.invoke(cli_app, ["db", "upgrade"])
    assert again.exit_code == 0 and "database already at" in again.output

    after = runner.invoke(cli_app, ["db", "current"])
    # The console wraps long lines (revision names grew): compare words, not line breaks.
    assert after.exit_code == 0 and "up to date" in " ".join(after.output.split())


@pytest.mark.slow
@pytest.mark.e2e
def test_serve_in_production_needs_db_upgrade_first(tmp_path: Path) -> None:
    from tests.e2e.server import AIAAS, base_env, start_server

    env = base_env(tmp_path / "data", AIAAS_SECRET_KEY=TEST_SECRET)
    assert env["AIAAS_ENV"] == "production"
    refused = subprocess.run(AIAAS + ["serve", "--port", "9", "--job-workers", "0"], env=env, capture_output=True,
                             text=True, timeout=120, check=False)
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "has never been migrated" in refused.stderr and "Run `aiaas db upgrade`" in refused.stderr
    assert "Traceback" not in refused.stderr

    subprocess.run(AIAAS + ["db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    server = start_server(env, tmp_path)
    try:
        import httpx

        assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200
    finally:
        server.stop()
