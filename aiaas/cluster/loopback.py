"""The environment a Ray process needs before `import ray`, and the one listener Ray won't let us bind.

Measured with ray 2.60.0 on Linux (see docs/cluster.md for the listener tables):
- With `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` unset, Ray rewrites a node address of 127.0.0.1
  to the host's routable address and binds GCS, raylet and worker gRPC servers to `::`
  (every interface), even with `--node-ip-address=127.0.0.1`.
- With it set to 0 (Ray's single-host mode) every server binds the node address,
  127.0.0.1, except one: each Serve replica's inter-deployment gRPC server, which
  `ray/serve/_private/replica.py` (`Replica._on_initialized`) binds to the literal
  `[::]:0`. There is no setting for it; `bind_serve_replica_grpc()` narrows it to the
  node address, the only address its callers ever dial (they use the replica's node IP).
- The variable is read once, when `ray` is imported, and inherited by every process Ray
  spawns, so it must be in the environment first.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

SINGLE_HOST_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# The wrappers installed by bind_serve_replica_grpc, so a second call in the same process is a no-op.
_BOUND: set[Callable[[Any, str], int]] = set()

RAY_VERSION = "2.60.0"  # the one version the notes above (and the patch below) were checked against


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ray_environment(bind_host: str, token_path: str | os.PathLike[str]) -> dict[str, str]:
    """The variables every Ray process of ours (driver, `ray start`, workers) must share.

    - single-host mode when bound to loopback (otherwise Ray ignores 127.0.0.1);
    - token auth on, with the token file named explicitly (never Ray's ~/.ray default);
    - no usage-stats reporting (nothing may leave loopback);
    - no auto-connect: after a disconnect, a late call from one of Ray's background threads
      would otherwise `ray.init()` a fresh default instance (seen once: Serve's handle metrics
      thread, after shutdown, started a cluster with a dashboard on port 8265).
    """
    env = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_AUTO_CONNECT": "0",
    }
    if is_loopback_host(bind_host):
        env[SINGLE_HOST_VAR] = "0"
    return env


def bind_serve_replica_grpc(bind_host: str | None = None) -> bool:
    """Make this process's Serve replica bind its gRPC server to its node's address, not `[::]`.

    `bind_host` defaults to the address of the node this process runs on, which is where
    Serve's routers connect (they dial the replica's node IP and port).

    Call it in a replica before Serve finishes starting it (our deployment's __init__ does:
    Serve runs the user constructor first, then `_on_initialized`, which binds). Returns
    False, changing nothing, on any Ray other than the one this was checked against.
    """
    import ray
    from ray.serve._private import replica as replica_module

    if ray.__version__ != RAY_VERSION or not hasattr(replica_module, "add_port_to_grpc_server"):
        log.warning("ray %s: not narrowing the Serve replica gRPC listener (checked on %s only)",
                    ray.__version__, RAY_VERSION)
        return False
    original: Callable[[Any, str], int] = replica_module.add_port_to_grpc_server
    if original in _BOUND:
        return True
    host = bind_host or ray.util.get_node_ip_address()
    from ray._common.network_utils import build_address

    def bound(server: Any, address: str) -> int:
        if address.startswith("[::]:"):
            address = build_address(host, int(address.rsplit(":", 1)[1]))
        return original(server, address)

    _BOUND.add(bound)
    replica_module.add_port_to_grpc_server = bound
    return True
