"""The one Settings object: read from AIAAS_* once per process, derived values, and the master secret."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from aiaas.core.errors import ConfigurationError
from aiaas.core.settings import MIN_SECRET_CHARS, Settings, get_settings, write_secret

GOOD_SECRET = "s" * MIN_SECRET_CHARS


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own AIAAS_* variables must not leak into these tests."""
    for name in ("AIAAS_SECRET_KEY", "AIAAS_ENV", "AIAAS_PORT", "AIAAS_DATA_DIR", "AIAAS_DATABASE_URL",
                 "AIAAS_BLOB_STORE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_values_come_from_aiaas_prefixed_environment_variables(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setenv("AIAAS_PORT", "9123")
    monkeypatch.setenv("AIAAS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PORT", "1")  # unprefixed names are not ours
    s = Settings()
    assert s.port == 9123 and s.data_dir == tmp_path.resolve()


def test_a_bad_value_is_refused_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIAAS_PORT", "70000")
    with pytest.raises(ValidationError, match="port"):
        Settings()
    with pytest.raises(ValidationError, match="env"):
        Settings(env="staging")  # not one of production, development, test


def test_get_settings_reads_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    try:
        monkeypatch.setenv("AIAAS_PORT", "9001")
        first = get_settings()
        monkeypatch.setenv("AIAAS_PORT", "9002")
        assert get_settings() is first and first.port == 9001
        get_settings.cache_clear()
        assert get_settings().port == 9002
    finally:
        get_settings.cache_clear()


def test_the_data_dir_is_expanded_and_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    s = Settings(data_dir=Path("~/aiaas-data"))
    assert s.data_dir == (tmp_path / "aiaas-data").resolve() and s.data_dir.is_absolute()


def test_database_url_defaults_to_sqlite_in_the_data_dir_and_picks_psycopg_for_postgres(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).sqlalchemy_url == f"sqlite:///{tmp_path.resolve() / 'aiaas.db'}"
    for given in ("postgres://u:p@db:5432/x", "postgresql://u:p@db:5432/x"):
        assert Settings(data_dir=tmp_path, database_url=given).sqlalchemy_url == "postgresql+psycopg://u:p@db:5432/x"
    sqlite = f"sqlite:///{tmp_path / 'other.db'}"
    assert Settings(data_dir=tmp_path, database_url=sqlite).sqlalchemy_url == sqlite


def test_blobs_default_to_the_data_dir_unless_a_store_url_is_given(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).blobs_url == f"file://{tmp_path.resolve() / 'blobs'}"
    assert Settings(data_dir=tmp_path, blob_store_url="s3://b/p").blobs_url == "s3://b/p"


def test_the_master_secret_comes_from_the_environment_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_text("f" * 40 + "\n")
    (tmp_path / "secret.key").chmod(0o600)  # production refuses a file group or others can read
    assert Settings(data_dir=tmp_path).master_secret() == "f" * 40  # the file, stripped
    monkeypatch.setenv("AIAAS_SECRET_KEY", GOOD_SECRET)
    assert Settings(data_dir=tmp_path).master_secret() == GOOD_SECRET


@pytest.mark.parametrize("secret", [None, "changeme", "s" * (MIN_SECRET_CHARS - 1)])
def test_production_refuses_a_missing_well_known_or_short_secret(tmp_path: Path, secret: str | None) -> None:
    s = Settings(data_dir=tmp_path, secret_key=secret)
    with pytest.raises(ConfigurationError, match="aiaas init") as info:
        s.master_secret()
    assert "AIAAS_SECRET_KEY" in info.value.message and str(MIN_SECRET_CHARS) in info.value.message


def test_development_runs_without_a_secret_but_test_and_production_do_not(tmp_path: Path) -> None:
    assert Settings(env="development", data_dir=tmp_path).master_secret()
    for env in ("test", "production"):
        with pytest.raises(ConfigurationError):
            Settings(env=env, data_dir=tmp_path).master_secret()


def test_write_secret_creates_a_private_file_once(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "fresh")
    assert write_secret(s) is True
    mode = stat.S_IMODE(s.secret_file.stat().st_mode)
    assert mode == 0o600
    first = s.secret_file.read_text()
    assert write_secret(s) is False and s.secret_file.read_text() == first  # never overwritten
    assert len(s.master_secret()) >= MIN_SECRET_CHARS
