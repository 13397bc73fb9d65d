"""`aiaas serve` and `aiaas worker`: the long-running processes, and how they stop.

`aiaas serve` on SIGTERM or SIGINT: stop accepting connections, read the requests already sent on open
connections (up to 3 s) and answer every request in flight, end open job-event streams with a final
event, and at the same moment tell the training workers to stop (each stops at its next step and
releases its lease, so the job resumes elsewhere at once). Whatever has not finished after
AIAAS_SHUTDOWN_GRACE_SECONDS (default 15) is cut: requests are cancelled; a worker with no step to stop
at (loading, preparing data, exporting) releases its lease and exits at grace - 3 s, and one that is
truly stuck is killed at grace + 2 s. Worst case about grace + 4 s: well within 25 s. Workers also end with `serve` when
it is killed outright (SIGKILL): see aiaas/jobs/lifetime.py.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer

from aiaas.cli.common import DataDirOpt, DbOpt, apply_env, handle_errors

if TYPE_CHECKING:
    from aiaas.core.settings import Settings
    from aiaas.jobs.pool import WorkerPool

log = logging.getLogger(__name__)


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

    from aiaas.cli.admin import shared_limits_warning, sweep_at_start
    from aiaas.core.logging import log_format, uvicorn_log_config
    from aiaas.core.settings import get_settings
    from aiaas.jobs.lifetime import die_with_parent

    die_with_parent()  # started by `aiaas quickstart`: end with it
    apply_env(data_dir, database_url)
    if job_workers is not None:
        os.environ["AIAAS_JOB_WORKERS"] = str(job_workers)
    settings = get_settings()
    settings.master_secret()  # fail here, clearly, rather than in every server process
    if settings.env == "production":  # it does not migrate at start: an old schema is refused here, clearly
        _check_schema(settings)
    sweep_at_start(settings)  # plaintext a killed process left behind
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
    grace = settings.shutdown_grace_seconds
    shared_metrics = _shared_metrics_dir(settings, workers)
    if shared_metrics is not None:
        get_settings.cache_clear()
        settings = get_settings()
    # Forwarded headers only from AIAAS_TRUSTED_PROXIES (uvicorn's middleware rewrites the client address and
    # scheme the app sees); none trusted, none honoured.
    config_args: dict[str, Any] = {"factory": True, "host": host, "port": port, "log_level": "info",
                                   "proxy_headers": bool(settings.trusted_proxies),
                                   "forwarded_allow_ips": settings.trusted_proxies or None,
                                   "timeout_graceful_shutdown": grace,
                                   # AIAAS_LOG_FORMAT=json: uvicorn's own lines as JSON too, in every worker
                                   # process; the edge middleware writes the access line (never uvicorn's).
                                   "log_config": uvicorn_log_config(),
                                   "access_log": log_format() != "json"}
    # uvicorn re-raises the stop signal once it has shut down; this handler takes it instead of the
    # default (which would end the process before the workers are stopped).
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    pool = _start_job_workers(settings)
    metrics_server = _start_metrics_server(settings, host)
    try:
        if received:  # stopped while the workers were starting
            pass
        elif workers == 1:
            _graceful_server(uvicorn.Config("aiaas.api.app:create_app", **config_args), pool).run()
        else:  # uvicorn's own supervisor; its API processes cut open streams at the grace period
            uvicorn.run("aiaas.api.app:create_app", workers=workers, **config_args)
    finally:
        if pool is not None:
            pool.stop(timeout=grace + 2)  # they exit by themselves by `grace` (see `worker`)
        if metrics_server is not None:
            metrics_server.close()
        if shared_metrics is not None:
            shutil.rmtree(shared_metrics, ignore_errors=True)
    if received:
        raise typer.Exit(128 + received[0])


def _shared_metrics_dir(settings: Settings, workers: int) -> Path | None:
    """With several API processes, or metrics on their own port, the processes share their numbers
    through files (aiaas/core/telemetry.py): a fresh directory per run, removed at exit, unless the
    operator named one (AIAAS_METRICS_DIR: then they empty it at start themselves)."""
    if settings.metrics_dir is not None or (workers <= 1 and settings.metrics_port is None):
        return None
    from aiaas.core.settings import make_private_dir

    run = settings.data_dir / "run"
    for old in run.glob("metrics-*"):  # left by a `serve` that was killed outright (or this pid's earlier run)
        pid = old.name.removeprefix("metrics-")
        if not pid.isdigit() or int(pid) == os.getpid() or not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = run / f"metrics-{os.getpid()}"
    make_private_dir(path)
    os.environ["AIAAS_METRICS_DIR"] = str(path)  # every API process (uvicorn spawns them) reads it
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _start_metrics_server(settings: Settings, host: str) -> Any:
    """AIAAS_METRICS_PORT: /metrics on its own port, served from this process (not an API process)."""
    if settings.metrics_port is None or settings.metrics_dir is None:
        return None
    from aiaas.services.metrics import MetricsServer
    from aiaas.store.db import Database

    server = MetricsServer(host, settings.metrics_port, settings.metrics_dir, Database(settings.sqlalchemy_url),
                           lease_seconds=settings.lease_seconds)
    log.info("metrics on http://%s:%s/metrics", host, settings.metrics_port)
    return server


def _check_schema(settings: Settings) -> None:
    from aiaas.store import migrate
    from aiaas.store.db import Database

    db = Database(settings.sqlalchemy_url)
    try:
        migrate.check_current(db.engine)
    finally:
        db.dispose()


def _start_job_workers(settings: Settings) -> WorkerPool | None:
    if settings.job_workers <= 0:
        return None
    from aiaas.jobs.pool import WorkerPool

    pool = WorkerPool(settings.job_workers, settings)
    pool.start()
    return pool


def _unread_bytes(connection: Any) -> int:
    """Bytes a client has sent on this connection that the server has not read yet (0 if unknown)."""
    import fcntl
    import termios

    transport = getattr(connection, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return 0
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:  # closed meanwhile
        return 0
    return int.from_bytes(buf, "little")


async def _drain_reads(connections: Any, settle_s: float = 0.3, max_s: float = 3.0) -> None:
    """Wait, at most `max_s`, until every request a client has already sent has been read: no connection has
    unread bytes in its socket, and none has started a request for `settle_s`. A busy event loop (or a starved
    process) may take longer than `settle_s` to read what is waiting; the kernel's count of unread bytes says
    exactly what is still to read, so such a request is not cut."""
    import asyncio

    def busy() -> int:
        return sum(1 for c in list(connections) if getattr(c, "cycle", None) is not None)

    def unread() -> bool:
        return any(_unread_bytes(c) for c in list(connections))

    loop = asyncio.get_running_loop()
    start = last_change = loop.time()
    seen = busy()
    while (unread() or loop.time() - last_change < settle_s) and loop.time() - start < max_s:
        await asyncio.sleep(0.05)
        now = busy()
        if now > seen:
            last_change = loop.time()
        seen = max(seen, now)


def _graceful_server(config: Any, pool: Any) -> Any:
    """uvicorn's server, which on the first stop signal also ends event streams and stops the workers."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        async def shutdown(self, sockets: list | None = None) -> None:
            # Stop accepting, then let requests already sent on open connections be read before uvicorn
            # closes every connection that has no request in progress: a client that sent its request
            # just before SIGTERM gets an answer, not a reset connection.
            for server in self.servers:
                server.close()
            for sock in sockets or []:
                sock.close()
            await _drain_reads(self.server_state.connections)
            await super().shutdown(sockets=None)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            first = not self.should_exit
            super().handle_exit(sig, frame)
            if first:
                from aiaas.core.lifecycle import begin_shutdown

                begin_shutdown()  # open event streams send a final event and end
                if pool is not None:  # not in the signal handler itself: Popen takes locks
                    threading.Thread(target=pool.begin_stop, name="stop-workers", daemon=True).start()

    return GracefulServer(config)


@handle_errors
def worker(data_dir: Path = DataDirOpt, database_url: str = DbOpt) -> None:
    """Run one training worker: claim queued jobs under a lease and train them."""
    from aiaas.jobs.lifetime import die_with_parent

    die_with_parent()  # started by `aiaas serve`: end with it, even if it is killed outright
    # Before torch/transformers load: no OpenMP spin-waiting on shared hosts, no progress bars in logs.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from aiaas.cli.admin import sweep_at_start
    from aiaas.core.settings import get_settings
    from aiaas.jobs.worker import Worker

    apply_env(data_dir, database_url)
    settings = get_settings()
    settings.master_secret()
    sweep_at_start(settings)
    w = Worker(settings)
    # Exit (releasing the lease) before `aiaas serve` would kill us: it waits the grace period plus 2 s.
    w.install_signal_handlers(hard_exit_after=max(1.0, settings.shutdown_grace_seconds - 3))
    w.run_forever()
