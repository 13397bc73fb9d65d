"""The dispatcher process: the one process that holds a Ray driver (never the API process).

It joins the cluster named by `AIAAS_CLUSTER_ADDRESS` (or starts a private single-host
session when unset), then claims fine-tuning jobs from the store and runs each as a Ray
task until SIGTERM/SIGINT. The API keeps writing jobs to the store and reading their
events from it, exactly as with local workers, so it never notices the difference.

`aiaas ray-dispatcher` calls `run_dispatcher`; `python -m aiaas.cli.dispatcher` works too.
It lives with the entrypoints, not in `aiaas/cluster/`, because it wires jobs and serving
together: the node helpers below it (session, loopback, node, gateway) are imported by jobs
and serving, and must not import them back (docs/design.md, checked by `lint-imports`).
"""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from aiaas.core.settings import Settings, get_settings

if TYPE_CHECKING:
    from aiaas.jobs.ray_backend import RayDispatcher

log = logging.getLogger(__name__)


def run_dispatcher(
    settings: Settings,
    *,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_jobs: int | None = None,
    cancel_grace_s: float = 30.0,
    local_cpus: int | None = None,
    temp_dir: Path | None = None,
    gateway_port: int | None = None,
    gateway_host: str | None = None,
) -> None:
    """Connect, dispatch until a signal, then stop this dispatcher's tasks and free their jobs.

    With `gateway_port`, the same process also serves Ray Serve deployments to API processes
    (aiaas/cluster/gateway.py) on `gateway_host` (default: the Ray bind host).
    """
    from aiaas.cluster.session import connect
    from aiaas.jobs.ray_backend import RayDispatcher

    with connect(settings, num_cpus=local_cpus, temp_dir=temp_dir) as session:
        dispatcher = RayDispatcher(settings, session.ray, num_cpus=num_cpus, num_gpus=num_gpus, max_jobs=max_jobs,
                                   cancel_grace_s=cancel_grace_s)

        def stop(signum: int, _frame: object) -> None:
            log.info("dispatcher stopping (signal %s)", signum)
            dispatcher.stopping.set()

        # Ours replace Ray's driver handler (sys.exit on SIGTERM, which would skip the clean-up);
        # with a gateway, uvicorn restores them and re-raises the signal once it has shut down.
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if gateway_port is None:
            dispatcher.run_forever()
        else:
            _run_with_gateway(settings, dispatcher, gateway_host or settings.ray_bind_host, gateway_port)


def _run_with_gateway(settings: Settings, dispatcher: RayDispatcher, host: str, port: int) -> None:
    """uvicorn in the main thread (it handles SIGTERM/SIGINT), the dispatch loop beside it."""
    import threading

    import uvicorn

    from aiaas.cluster.gateway import create_gateway_app, gateway_token
    from aiaas.serving.ray_serve import RayServingBackend

    backend = RayServingBackend(settings)
    app = create_gateway_app(backend, gateway_token(settings.master_secret()))
    loop = threading.Thread(target=dispatcher.run_forever, name="ray-dispatcher", daemon=True)
    loop.start()
    try:
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)).run()
    finally:
        dispatcher.stopping.set()
        loop.join(timeout=60)


def main(argv: list[str] | None = None) -> int:
    from aiaas.core.logging import configure_logging

    parser = argparse.ArgumentParser(prog="aiaas ray-dispatcher", description=__doc__.splitlines()[0])
    parser.add_argument("--num-cpus", type=float, default=1, help="CPUs per training task (and torch threads).")
    parser.add_argument("--num-gpus", type=float, default=0, help="GPUs per training task.")
    parser.add_argument("--max-jobs", type=int, default=None, help="Jobs at once (default: what the cluster fits).")
    parser.add_argument("--cancel-grace", type=float, default=30.0, help="Seconds before a cancelled task is killed.")
    parser.add_argument("--local-cpus", type=int, default=None, help="CPUs of a private session (no cluster).")
    parser.add_argument("--gateway-port", type=int, default=None,
                        help="Also serve Ray Serve deployments to API processes on this port.")
    parser.add_argument("--gateway-host", default=None, help="Gateway address (default: AIAAS_RAY_BIND_HOST).")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    settings = get_settings()
    run_dispatcher(settings, num_cpus=args.num_cpus, num_gpus=args.num_gpus, max_jobs=args.max_jobs,
                   cancel_grace_s=args.cancel_grace, local_cpus=args.local_cpus, gateway_port=args.gateway_port,
                   gateway_host=args.gateway_host)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
