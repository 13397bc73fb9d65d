"""Run Alembic migrations programmatically (no alembic.ini needed), and check a database is current.

Production servers do not migrate at start (`aiaas db upgrade` does, explicitly): `prepare_for_serving`
refuses a database that is not at this version's head. Development and test migrate at start.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from aiaas.core.errors import ConfigurationError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revisions() -> tuple[str, ...]:
    """The revisions this version of aiaas expects (one, unless branches were left unmerged)."""
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    return tuple(sorted(script.get_heads()))


def check_current(engine: Engine) -> None:
    """Raise ConfigurationError, saying to run `aiaas db upgrade`, unless the database is at head."""
    current = current_revision(engine)
    heads = head_revisions()
    if current is not None and current in heads:
        return
    where = engine.url.render_as_string(hide_password=True)
    if current is None:
        state = "has never been migrated"
    elif current in _known_revisions():
        state = f"is at revision {current}, older than this version's {', '.join(heads)}"
    else:
        state = (f"is at revision {current}, which this version of aiaas does not know (migrated by a newer "
                 "version?); run the matching version")
    raise ConfigurationError(
        f"the database {where} {state}. Run `aiaas db upgrade` (with the same AIAAS_DATA_DIR / "
        "AIAAS_DATABASE_URL) before starting the server: with AIAAS_ENV=production it does not migrate at start.",
        param="database_url",
    )


def prepare_for_serving(engine: Engine, *, env: str) -> None:
    """At server start: production only checks the schema is current; development and test migrate."""
    if env == "production":
        check_current(engine)
    else:
        upgrade(engine)


def _known_revisions() -> set[str]:
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    return {rev.revision for rev in script.walk_revisions()}
