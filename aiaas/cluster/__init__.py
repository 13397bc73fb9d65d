"""Running aiaas on a Ray cluster (install extra `ray`).

- `session`: start or join a Ray session with every setting explicit (bind address,
  token auth, temp dir); the only place that calls `ray.init`.
- `loopback`: the environment Ray needs before import, and why (measured notes).
- `listeners`: which ports a process tree listens on (/proc), to prove loopback-only.
- `dispatcher`: the process that holds the Ray driver and runs training jobs on Ray.

Nothing here imports ray at import time: importing ray first would freeze its settings.
"""
