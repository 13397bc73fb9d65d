"""Operator commands that run on the server host: init, orgs create, serve."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from aiaas.cli.common import DataDirOpt, DbOpt, apply_env, console, handle_errors

orgs_app = typer.Typer(help="Organisations (run on the server host by the operator).", no_args_is_help=True)


def _database():  # type: ignore[no-untyped-def]
    from aiaas.core.settings import get_settings
    from aiaas.store import migrate
    from aiaas.store.db import Database

    settings = get_settings()
    settings.master_secret()
    db = Database(settings.sqlalchemy_url)
    migrate.upgrade(db.engine)
    return settings, db


@handle_errors
def init(
    data_dir: Path = DataDirOpt,
    database_url: str = DbOpt,
    org_name: str = typer.Option("default", "--org", help="Name of the first organisation."),
) -> None:
    """Create the data directory and master secret, migrate the database, create the first organisation."""
    from sqlalchemy import func, select

    from aiaas.core.settings import get_settings, write_secret
    from aiaas.store import tenancy
    from aiaas.store.models import Organization

    apply_env(data_dir, database_url)
    settings = get_settings()
    created_secret = write_secret(settings)
    settings, db = _database()
    console.print(f"data directory: {settings.data_dir}")
    console.print(f"master secret:  {settings.secret_file} ({'created, mode 0600' if created_secret else 'kept'})")
    with db.session() as s:
        if s.scalar(select(func.count()).select_from(Organization)):
            console.print("already initialised: organisations exist (use `aiaas orgs create NAME` for another).")
            return
        org, _row, key = tenancy.create_organization(s, org_name)
    console.print(f"organisation:   {org.name} ({org.id})")
    console.print("admin API key (shown once, store it now):")
    print(key)


@orgs_app.command("create")
@handle_errors
def orgs_create(
    name: str = typer.Argument(..., help="Organisation name (unique)."),
    data_dir: Path = DataDirOpt,
    database_url: str = DbOpt,
) -> None:
    """Create an organisation and print its first admin key once."""
    from aiaas.store import tenancy

    apply_env(data_dir, database_url)
    _settings, db = _database()
    with db.session() as s:
        org, _row, key = tenancy.create_organization(s, name)
    console.print(f"organisation {org.name} ({org.id}); admin API key (shown once):")
    print(key)


@handle_errors
def serve(
    host: str = typer.Option(None, "--host", envvar="AIAAS_HOST", help="Bind address (default 127.0.0.1)."),
    port: int = typer.Option(None, "--port", envvar="AIAAS_PORT", help="Port (default 8000)."),
    workers: int = typer.Option(1, "--workers", help="API server processes."),
    job_workers: int = typer.Option(
        None, "--job-workers", envvar="AIAAS_JOB_WORKERS", help="Training worker processes (0 disables)."
    ),
    data_dir: Path = DataDirOpt,
    database_url: str = DbOpt,
) -> None:
    """Run the API server (uvicorn) and the local training worker pool."""
    import uvicorn

    from aiaas.core.settings import get_settings

    apply_env(data_dir, database_url)
    if job_workers is not None:
        os.environ["AIAAS_JOB_WORKERS"] = str(job_workers)
    settings = get_settings()
    settings.master_secret()  # fail here, clearly, rather than in every server process
    host = host or settings.host
    port = port if port is not None else settings.port
    pool = _start_job_workers(settings.job_workers)
    try:
        uvicorn.run(
            "aiaas.api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
            proxy_headers=False,
        )
    finally:
        if pool is not None:
            pool.stop()


def _start_job_workers(n: int):  # type: ignore[no-untyped-def]
    if n <= 0:
        return None
    try:
        from aiaas.jobs.pool import WorkerPool
    except ImportError:  # the job system is not part of this build yet
        return None
    pool = WorkerPool(n)
    pool.start()
    return pool


@handle_errors
def worker(data_dir: Path = DataDirOpt, database_url: str = DbOpt) -> None:
    """Run one training worker: claim queued jobs under a lease and train them."""
    from aiaas.core.settings import get_settings
    from aiaas.jobs.worker import Worker

    apply_env(data_dir, database_url)
    settings = get_settings()
    settings.master_secret()
    w = Worker(settings)
    w.install_signal_handlers()
    w.run_forever()
