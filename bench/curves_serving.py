"""The serving cost curve: p50/p99 latency and throughput vs. concurrent clients against a real `aiaas serve`.

Everything is bench/serving's: the MiniLM-L6 6-topic benchmark model (bench.serving.model, exported
int8 by aiaas's own export), the server set up as a client would meet it (bench.serving.aiaas_setup:
`aiaas init`, the artifact registered, `aiaas serve`, an infer key and a deployment with min_replicas=1),
and the closed-loop load generator (bench.serving.load: N keep-alive clients, each sending its next
`POST /v1/deployments/{name}/predict` when the last one answered). Each concurrency level is one
window after its own warm-up; the levels run ascending in round 0 and descending in round 1 so a drift
in the machine's load does not line up with the number of clients; medians of the rounds are reported.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.serving import aiaas_setup, load, procs
from bench.serving.run import _build_model

CLIENTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
log = logging.getLogger("bench.curves")


def _target(deployed: aiaas_setup.Aiaas, texts: list[str]) -> load.Target:
    return load.Target(
        "127.0.0.1",
        deployed.server.port,
        f"/v1/deployments/{deployed.deployment}/predict",
        [json.dumps({"inputs": [t]}).encode() for t in texts],
        {"Authorization": f"Bearer {deployed.infer_key}"},
    )


def _sweep(target: load.Target, meter: procs.ThreadMeter, clients: tuple[int, ...], *, rounds: int,
           warmup_s: float, window_s: float) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {c: [] for c in clients}
    for r in range(rounds):
        order = clients if r % 2 == 0 else tuple(reversed(clients))
        for c in order:
            window = load.closed_loop(target, clients=c, warmup_s=warmup_s, window_s=window_s, cpu=meter)
            summary = window.summary() | {"round": r, "loadavg_1m": round(os.getloadavg()[0], 2)}
            out[c].append(summary)
            log.info("round %d clients %3d %s", r, c,
                     {k: summary[k] for k in ("rps", "p50_ms", "p99_ms", "errors")})
    return out


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return round(statistics.median(values), 2) if values else None


def measure(*, quick: bool) -> dict:
    """Build/reuse the model, start the server, sweep the clients, stop the server."""
    entry = _build_model()
    data = json.loads((entry / "data.json").read_text())
    clients = (1, 4, 16, 64, 256) if quick else CLIENTS
    rounds, warmup_s, window_s = (1, 1.0, 3.0) if quick else (2, 3.0, 12.0)
    work = Path(tempfile.mkdtemp(prefix="bench-curves-serving-"))
    log_dir = work / "logs"
    log_dir.mkdir()
    server = None
    try:
        server, admin_key, model_id, _env = aiaas_setup.start(entry, work, log_dir)
        deployed = aiaas_setup.finish(server, admin_key, model_id)
        target = _target(deployed, data["texts"])
        load.warm(target, requests=200)
        t0 = time.perf_counter()
        runs = _sweep(target, procs.ThreadMeter(server), clients, rounds=rounds, warmup_s=warmup_s,
                      window_s=window_s)
        sweep_s = time.perf_counter() - t0
        tree = server.describe()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    points = [
        {
            "clients": c,
            "rps": _median(runs[c], "rps"),
            "p50_ms": _median(runs[c], "p50_ms"),
            "p99_ms": _median(runs[c], "p99_ms"),
            "errors": sum(r["errors"] for r in runs[c]),
            "requests": sum(r["requests"] for r in runs[c]),
            "cpu_ms_per_request": _median(runs[c], "cpu_ms_per_request"),
            "rounds": runs[c],
        }
        for c in clients
    ]
    return {
        "what": "`aiaas serve`, POST /v1/deployments/{name}/predict with an infer key, one text a request, "
        "MiniLM-L6 6-topic classifier (ONNX, export's int8 guard), closed loop of N keep-alive clients",
        "model_export": {k: data["export"].get(k) for k in ("precision", "agreement") if k in data["export"]},
        "rounds": rounds,
        "warmup_s": warmup_s,
        "window_s": window_s,
        "sweep_s": round(sweep_s, 1),
        "server_rss_mib": round(sum(p["rss_mib"] for p in tree), 1),
        "points": points,
    }
