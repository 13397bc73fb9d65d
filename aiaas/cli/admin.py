"""Operator commands that run on the server host: init, orgs create|delete|limits|audit-logs, serve."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from aiaas.cli.common import DataDirOpt, DbOpt, apply_env, console, handle_errors, print_json

log = logging.getLogger(__name__)

orgs_app = typer.Typer(help="Organisations (run on the server host by the operator).", no_args_is_help=True)


@contextlib.contextmanager
def _database() -> Iterator[tuple[Any, Any]]:
    """Settings and a migrated database, disposed of afterwards."""
    from aiaas.core.settings import get_settings
    from aiaas.store import migrate
    from aiaas.store.db import Database

    settings = get_settings()
    settings.master_secret()
    db = Database(settings.sqlalchemy_url)
    try:
        migrate.upgrade(db.engine)
        yield settings, db
    finally:
        db.dispose()


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
    with _database() as (settings, db), db.session() as s:
        console.print(f"data directory: {settings.data_dir}")
        kept = "created, mode 0600" if created_secret else "kept"
        console.print(f"master secret:  {settings.secret_file} ({kept})")
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
    with _database() as (_settings, db), db.session() as s:
        org, _row, key = tenancy.create_organization(s, name)
    console.print(f"organisation {org.name} ({org.id}); admin API key (shown once):")
    print(key)


@orgs_app.command("delete")
@handle_errors
def orgs_delete(
    name: str = typer.Argument(..., help="Organisation name."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    data_dir: Path = DataDirOpt,
    database_url: str = DbOpt,
) -> None:
    """Delete an organisation with all its data: rows, keys, its data key, blobs and job work directories.

    The data key goes with the organisation's row, so any copy of its blobs left anywhere (a backup, a
    cache on another node) can no longer be decrypted.
    """
    from aiaas.services import audit
    from aiaas.store import tenancy
    from aiaas.store.blobs import create_blob_store

    apply_env(data_dir, database_url)
    with _database() as (settings, db):
        with db.session() as s:
            org_id = tenancy.get_organization_by_name(s, name).id
        if not yes:
            typer.confirm(f"Delete organisation {name} ({org_id}) and all its data? This cannot be undone.",
                          abort=True)
        with db.session() as s:
            leftovers = tenancy.delete_organization(s, org_id)
            audit.record(s, audit.OPERATOR, "organization.deleted", target_type="organization",
                         target_id=org_id, details={"name": name})
    # The key is destroyed (committed above); removing the ciphertext only frees space.
    blobs = create_blob_store(settings.blobs_url, settings)
    failed = 0
    for uri in leftovers["blobs"]:
        try:
            blobs.delete(uri)
        except Exception:  # noqa: BLE001 - unreadable without the key anyway; report and go on
            failed += 1
            log.warning("could not delete blob %s", uri, exc_info=True)
    for job_id in leftovers["jobs"]:
        shutil.rmtree(settings.jobs_dir / job_id, ignore_errors=True)
    note = f"; {failed} blobs could not be removed (they are unreadable without the key)" if failed else ""
    n_blobs, n_jobs = len(leftovers["blobs"]), len(leftovers["jobs"])
    console.print(f"deleted organisation {name} ({org_id}): its data key, {n_blobs} blobs and "
                  f"{n_jobs} job directories{note}")


@orgs_app.command("limits")
@handle_errors
def orgs_limits(
    name: str = typer.Argument(..., help="Organisation name."),
    set_: list[str] = typer.Option(
        None, "--set", help="NAME=VALUE (0 = unlimited, VALUE 'default' removes the override); repeatable."
    ),
    data_dir: Path = DataDirOpt,
    database_url: str = DbOpt,
) -> None:
    """Show an organisation's rate limits and quotas, and override them with --set."""
    from aiaas.services import quotas
    from aiaas.store import tenancy

    apply_env(data_dir, database_url)
    with _database() as (settings, db), db.session() as s:
        org = tenancy.get_organization_by_name(s, name)
        if set_:
            tenancy.update_organization_settings(s, org.id, quotas.parse_overrides(set_))
        overrides = dict(org.settings or {})
        limits = quotas.org_limits(settings, overrides)
    table = Table("limit", "value", "from")
    for limit in quotas.LIMIT_NAMES:
        value = getattr(limits, limit)
        table.add_row(limit, "unlimited" if value == 0 else str(value),
                      "organisation" if limit in overrides else "server default")
    console.print(table)


@orgs_app.command("audit-logs")
@handle_errors
def orgs_audit_logs(
    name: str = typer.Argument(None, help="Organisation; omit it for records no organisation owns "
                                          "(unknown keys, deleted organisations)."),
    limit: int = typer.Option(50, "--limit", min=1, max=100),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_dir: Path = DataDirOpt,
    database_url: str = DbOpt,
) -> None:
    """The newest audit records of an organisation, or the operator-only ones."""
    from aiaas.services import audit
    from aiaas.store import tenancy

    apply_env(data_dir, database_url)
    with _database() as (_settings, db), db.session() as s:
        org_id = tenancy.get_organization_by_name(s, name).id if name else None
        rows, _ = audit.list_logs(s, org_id, after=None, limit=limit)
        records = [audit.log_public(r) for r in rows]
    if as_json:
        print_json(records)
        return
    table = Table("time", "action", "actor", "target", "ip", "request")
    for r in records:
        target = f"{r['target']['type']} {r['target']['id']}" if r["target"] else ""
        table.add_row(str(r["created_at"]), r["action"], (r["actor"] or {}).get("id") or "", target,
                      r["client_ip"] or "", r["request_id"] or "")
    console.print(table)


@handle_errors
def serve(
    host: str = typer.Option(None, "--host", envvar="AIAAS_HOST", help="Bind address (default 127.0.0.1)."),
    port: int = typer.Option(None, "--port", envvar="AIAAS_PORT", help="Port (default 8000)."),
    workers: int = typer.Option(
        1, "--workers", help="API server processes (with more than one, share rate limits: AIAAS_RATE_LIMIT_URL)."
    ),
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
    if settings.cluster_address and job_workers is None:
        # On a cluster, training runs as Ray tasks started by `aiaas ray-dispatcher`, not local workers.
        os.environ["AIAAS_JOB_WORKERS"] = "0"
        get_settings.cache_clear()
        settings = get_settings()
    host = host or settings.host
    port = port if port is not None else settings.port
    warning = shared_limits_warning(workers, settings)
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    pool = _start_job_workers(settings.job_workers)
    try:
        uvicorn.run(
            "aiaas.api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
            # Forwarded headers only from AIAAS_TRUSTED_PROXIES (uvicorn's middleware rewrites the client
            # address and scheme the app sees); none trusted, none honoured.
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=settings.trusted_proxies or None,
        )
    finally:
        if pool is not None:
            pool.stop()


def shared_limits_warning(workers: int, settings) -> str | None:  # type: ignore[no-untyped-def]
    """Several API processes with in-memory rate limits each count their own requests."""
    if workers > 1 and settings.rate_limit_url in (None, "", "memory://"):
        return (
            f"--workers {workers} with in-memory rate limits: each API process counts its own, so a key "
            f"may make up to {workers}x its requests and tokens per minute. Set "
            "AIAAS_RATE_LIMIT_URL=redis://... to share the limits between processes."
        )
    return None


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
    # Before torch/transformers load: no OpenMP spin-waiting on shared hosts, no progress bars in logs.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from aiaas.core.settings import get_settings
    from aiaas.jobs.worker import Worker

    apply_env(data_dir, database_url)
    settings = get_settings()
    settings.master_secret()
    w = Worker(settings)
    w.install_signal_handlers()
    w.run_forever()


@handle_errors
def ray_dispatcher(
    num_cpus: float = typer.Option(1, "--num-cpus", help="CPUs per training task (and torch threads)."),
    num_gpus: float = typer.Option(0, "--num-gpus", help="GPUs per training task."),
    max_jobs: int = typer.Option(None, "--max-jobs", help="Jobs at once (default: what the cluster fits)."),
    cancel_grace: float = typer.Option(30.0, "--cancel-grace", help="Seconds before a cancelled task is killed."),
    gateway_port: int = typer.Option(None, "--gateway-port",
                                     help="Also serve deployments on Ray Serve to API processes on this port."),
    gateway_host: str = typer.Option(None, "--gateway-host", help="Gateway address (default AIAAS_RAY_BIND_HOST)."),
    data_dir: Path = DataDirOpt,
    database_url: str = DbOpt,
) -> None:
    """Run training jobs as Ray tasks on the cluster at AIAAS_CLUSTER_ADDRESS (and, with --gateway-port, serve
    deployments on Ray Serve). Keeps the Ray driver out of the API process."""
    from aiaas.cluster.dispatcher import run_dispatcher
    from aiaas.core.settings import get_settings

    apply_env(data_dir, database_url)
    settings = get_settings()
    settings.master_secret()
    run_dispatcher(settings, num_cpus=num_cpus, num_gpus=num_gpus, max_jobs=max_jobs, cancel_grace_s=cancel_grace,
                   gateway_port=gateway_port, gateway_host=gateway_host)
