"""The dispatcher process: the one process that holds a Ray driver (never the API process).

It joins the cluster named by `AIAAS_CLUSTER_ADDRESS` (or starts a private single-host
session when unset), then claims fine-tuning jobs from the store and runs each as a Ray
task until SIGTERM/SIGINT. The API keeps writing jobs to the store and reading their
events from it, exactly as with local workers, so it never notices the difference.

`aiaas ray-dispatcher` calls `run_dispatcher`; `python -m aiaas.cluster.dispatcher` works too.
"""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from aiaas.core.settings import Settings, get_settings

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
) -> None:
    """Connect, dispatch until a signal, then stop this dispatcher's tasks and free their jobs."""
    from aiaas.cluster.session import connect
    from aiaas.jobs.ray_backend import RayDispatcher

    with connect(settings, num_cpus=local_cpus, temp_dir=temp_dir) as session:
        dispatcher = RayDispatcher(settings, session.ray, num_cpus=num_cpus, num_gpus=num_gpus, max_jobs=max_jobs,
                                   cancel_grace_s=cancel_grace_s)

        def stop(signum: int, _frame: object) -> None:
            log.info("dispatcher stopping (signal %s)", signum)
            dispatcher.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        dispatcher.run_forever()


def main(argv: list[str] | None = None) -> int:
    from aiaas.core.logging import configure_logging

    parser = argparse.ArgumentParser(prog="aiaas ray-dispatcher", description=__doc__.splitlines()[0])
    parser.add_argument("--num-cpus", type=float, default=1, help="CPUs per training task (and torch threads).")
    parser.add_argument("--num-gpus", type=float, default=0, help="GPUs per training task.")
    parser.add_argument("--max-jobs", type=int, default=None, help="Jobs at once (default: what the cluster fits).")
    parser.add_argument("--cancel-grace", type=float, default=30.0, help="Seconds before a cancelled task is killed.")
    parser.add_argument("--local-cpus", type=int, default=None, help="CPUs of a private session (no cluster).")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    settings = get_settings()
    run_dispatcher(settings, num_cpus=args.num_cpus, num_gpus=args.num_gpus, max_jobs=args.max_jobs,
                   cancel_grace_s=args.cancel_grace, local_cpus=args.local_cpus)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
