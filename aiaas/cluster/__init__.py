"""Running aiaas on a Ray cluster (install extra `ray`); see docs/cluster.md.

- `session`: start or join a Ray session with every setting explicit (bind address,
  token auth, temp dir); the only place that calls `ray.init`.
- `loopback`: the environment Ray needs before import, and why (measured notes).
- `listeners`: which ports a process tree listens on (/proc), to prove loopback-only.
- `node`: what a task or replica rebuilds on its node (settings without secrets, blobs).
- `gateway`: Ray Serve deployments behind a small authenticated HTTP API, and its client,
  so the API process never holds a Ray driver.

These are node helpers that `jobs`, `serving` and `services` import; they import only `core`
and `store`. The dispatcher process that wires jobs and serving onto a cluster is an
entrypoint and lives in `aiaas/cli/dispatcher.py`.

Nothing here imports ray at import time: importing ray first would freeze its settings.
"""
