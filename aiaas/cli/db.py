"""`aiaas db upgrade|current`: database migrations, run explicitly (production servers do not migrate at start)."""

from __future__ import annotations

from pathlib import Path

import typer

from aiaas.cli.common import DataDirOpt, DbOpt, JsonOpt, apply_env, console, handle_errors, print_json

db_app = typer.Typer(help="Database schema (run on the server host by the operator).", no_args_is_help=True)


@db_app.command("upgrade")
@handle_errors
def upgrade(
    revision: str = typer.Argument("head", help="Target revision (default: this version's head)."),
    data_dir: Path = DataDirOpt,
    database_url: str = DbOpt,
) -> None:
    """Migrate the database to this version's schema (safe to repeat; run before starting a new version)."""
    from aiaas.core.settings import get_settings
    from aiaas.store import migrate
    from aiaas.store.db import Database

    apply_env(data_dir, database_url)
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.sqlalchemy_url)
    try:
        before = migrate.current_revision(db.engine)
        migrate.upgrade(db.engine, revision)
        after = migrate.current_revision(db.engine)
    finally:
        db.dispose()
    if before == after:
        console.print(f"database already at {after}")
    else:
        console.print(f"database upgraded from {before or '(empty)'} to {after}")


@db_app.command("current")
@handle_errors
def current(data_dir: Path = DataDirOpt, database_url: str = DbOpt, as_json: bool = JsonOpt) -> None:
    """Show the database's revision and this version's head; exit 1 when they differ."""
    from aiaas.core.settings import get_settings
    from aiaas.store import migrate
    from aiaas.store.db import Database

    apply_env(data_dir, database_url)
    settings = get_settings()
    db = Database(settings.sqlalchemy_url)
    try:
        rev = migrate.current_revision(db.engine)
    finally:
        db.dispose()
    heads = list(migrate.head_revisions())
    up_to_date = rev in heads
    if as_json:
        print_json({"current": rev, "heads": heads, "up_to_date": up_to_date})
    else:
        state = "up to date" if up_to_date else "run `aiaas db upgrade`"
        console.print(f"database at {rev or '(empty)'}; this version needs {', '.join(heads)}: {state}")
    if not up_to_date:
        raise typer.Exit(1)
