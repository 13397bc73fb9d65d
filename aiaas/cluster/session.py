"""Start or join a Ray session with every setting explicit: bind address, token auth, temp dir.

Nothing is left to Ray's defaults, because its defaults are unsafe for us (see
aiaas/cluster/loopback.py): it would pick the routable address and bind every interface,
and a local `ray.init` writes a token to ~/.ray. One process per host should hold a Ray
driver (the dispatcher/gateway); the API process never does, because a driver whose
cluster goes away blocks or is killed (measured: ~68 s after the cluster stopped).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import tempfile
from pathlib import Path
from typing import Any, Self

from aiaas.cluster.loopback import ray_environment
from aiaas.core.errors import ConfigurationError, Unavailable
from aiaas.core.settings import Settings

log = logging.getLogger(__name__)

# Ray puts unix sockets under <temp>/session_<date>_<pid>/sockets/…: about 60 characters
# beyond the temp dir, and a socket path may not exceed 107 bytes.
MAX_TEMP_DIR_CHARS = 45
CONNECT_PROBE_S = 5.0
# Serve's handles and replicas report load every 10 s by default; Ray's own note on the handle
# interval: "This interval will affect the cold start time period" (a request to a model at
# zero replicas). Read by each process when it imports ray.serve; local workers inherit them.
SERVE_TUNING = {
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
}


def _import_ray(env: dict[str, str]) -> Any:
    """Put `env` in os.environ, then import ray. Refuse if ray was imported under other values,
    since Ray reads them once at import and bakes them into every process it spawns."""
    import sys

    if "ray" in sys.modules:
        stale = {k: os.environ.get(k) for k in env if os.environ.get(k) != env[k]}
        if stale:
            raise ConfigurationError(
                f"ray was imported before aiaas configured it (differing: {sorted(stale)}); "
                "start Ray sessions through aiaas.cluster.session.connect() before importing ray."
            )
    os.environ.update(env)
    for key, value in SERVE_TUNING.items():
        os.environ.setdefault(key, value)  # an operator's own value wins
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("Running on Ray needs the ray extra: pip install 'aiaas[ray]'") from exc
    return ray


def local_temp_dir(settings: Settings) -> Path:
    """`<data_dir>/ray`, or a short per-data-dir path under /tmp when that would be too long for sockets."""
    preferred = settings.data_dir / "ray"
    if len(str(preferred)) <= MAX_TEMP_DIR_CHARS:
        return preferred
    digest = hashlib.sha256(str(settings.data_dir).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"aiaas-ray-{os.getuid()}-{digest}"


def ensure_token(path: Path) -> Path:
    """Create a random token file (0600) if missing; a local session's workers read it from there."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path


def _probe(address: str) -> None:
    """Fail in seconds on an unreachable cluster (ray.init itself was measured blocking > 120 s)."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_PROBE_S):
            pass
    except (OSError, ValueError) as exc:
        raise Unavailable(f"The Ray cluster at {address} is not reachable ({exc}); check "
                          "AIAAS_CLUSTER_ADDRESS and that the head node is running.") from exc


class RaySession:
    """This process's Ray driver. Use as a context manager, or call shutdown()."""

    def __init__(self, *, ray: Any, address: str, started_here: bool, temp_dir: Path | None,
                 token_path: Path, bind_host: str) -> None:
        self.ray = ray
        self.address = address
        self.started_here = started_here
        self.temp_dir = temp_dir
        self.token_path = token_path
        self.bind_host = bind_host

    def shutdown(self) -> None:
        """Disconnect; a session started here also stops its local Ray processes (never `ray stop`)."""
        if self.ray.is_initialized():
            self.ray.shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"RaySession(address={self.address!r}, started_here={self.started_here})"


def connect(
    settings: Settings,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    temp_dir: Path | None = None,
    namespace: str = "aiaas",
    log_to_driver: bool = False,
) -> RaySession:
    """Join `settings.cluster_address`, or start a private single-host session when it is unset.

    Joining needs `ray_auth_token_path` (the cluster's token); a private session makes its
    own token in its temp dir unless one is configured.
    """
    bind_host = settings.ray_bind_host
    if settings.cluster_address:
        if settings.ray_auth_token_path is None or not Path(settings.ray_auth_token_path).is_file():
            raise ConfigurationError(
                "Joining a Ray cluster needs its token: set AIAAS_RAY_AUTH_TOKEN_PATH to the file the "
                "head node was started with (RAY_AUTH_TOKEN_PATH)."
            )
        token_path = Path(settings.ray_auth_token_path)
        _probe(settings.cluster_address)
        ray = _import_ray(ray_environment(bind_host, token_path))
        if ray.is_initialized():
            raise ConfigurationError("This process already holds a Ray session.")
        kwargs: dict[str, Any] = {"namespace": namespace, "log_to_driver": log_to_driver}
        if not settings.cluster_address.startswith("ray://"):
            kwargs["_node_ip_address"] = bind_host  # else Ray guesses, and a wrong guess hangs init
        ray.init(address=settings.cluster_address, **kwargs)
        log.info("joined Ray cluster at %s as %s", settings.cluster_address, bind_host)
        return RaySession(ray=ray, address=settings.cluster_address, started_here=False, temp_dir=None,
                          token_path=token_path, bind_host=bind_host)

    temp_dir = (temp_dir or local_temp_dir(settings)).resolve()
    if len(str(temp_dir)) > MAX_TEMP_DIR_CHARS:
        raise ConfigurationError(f"Ray temp dir {temp_dir} is too long for Ray's unix sockets; use a path of at "
                                 f"most {MAX_TEMP_DIR_CHARS} characters.")
    temp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    token_path = ensure_token(Path(settings.ray_auth_token_path or temp_dir / "auth_token"))
    ray = _import_ray(ray_environment(bind_host, token_path))
    if ray.is_initialized():
        raise ConfigurationError("This process already holds a Ray session.")
    ray.init(
        address="local",
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        namespace=namespace,
        log_to_driver=log_to_driver,
        _node_ip_address=bind_host,
        _temp_dir=str(temp_dir),
    )
    address = ray.get_runtime_context().gcs_address
    log.info("started a private Ray session at %s (temp dir %s)", address, temp_dir)
    return RaySession(ray=ray, address=address, started_here=True, temp_dir=temp_dir, token_path=token_path,
                      bind_host=bind_host)
