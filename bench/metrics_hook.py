"""µs per request of the Prometheus recording (aiaas/core/telemetry.py), next to what prometheus_client's own
metric objects would cost for the same numbers (in memory, and in its multiprocess mode, which writes
every value into an mmap file): python bench/metrics_hook.py

Per request the server records one HTTP line (count + latency histogram) and, for inference, one
deployment line (requests, texts, tokens, unknown tokens, latency and texts-per-request histograms, and
the finer latency histogram per deployment id that the console's charts read)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

N = 20000


def ours() -> list[float]:
    from aiaas.core.telemetry import Recorder

    r = Recorder()
    runs = []
    for _ in range(7):
        t = time.perf_counter()
        for i in range(N):
            r.http("POST", "/v1/deployments/{name}/predict", 200, 0.004)
            r.inference("support", "ft:minilm-l6:acme:support:ftjob-1", 0.004, 4, 60, 0, "dep-1a2b3c")
        runs.append((time.perf_counter() - t) / N * 1e6)
    return runs


def prometheus_client_objects() -> list[float]:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    reg = CollectorRegistry()
    dep = ["deployment", "model"]
    http_n = Counter("h_requests", "", ["method", "route", "status"], registry=reg)
    http_t = Histogram("h_latency", "", ["method", "route"], registry=reg)
    counters = [Counter(f"d_{n}", "", dep, registry=reg) for n in ("requests", "texts", "tokens", "unknown")]
    hists = [Histogram(f"d_{n}", "", dep, registry=reg) for n in ("latency", "texts_per_request")]
    labels = ("support", "ft:minilm-l6:acme:support:ftjob-1")
    runs = []
    for _ in range(7):
        t = time.perf_counter()
        for i in range(N):
            http_n.labels("POST", "/v1/deployments/{name}/predict", "200").inc()
            http_t.labels("POST", "/v1/deployments/{name}/predict").observe(0.004)
            for c, v in zip(counters, (1, 4, 60, 0)):
                c.labels(*labels).inc(v)
            hists[0].labels(*labels).observe(0.004)
            hists[1].labels(*labels).observe(4)
        runs.append((time.perf_counter() - t) / N * 1e6)
    return runs


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--prometheus-client":
        print(" ".join(f"{x:.2f}" for x in prometheus_client_objects()))
        return
    runs = ours()
    print(f"aiaas telemetry:                        min {min(runs):5.2f} us, median {statistics.median(runs):5.2f} us "
          "per request")
    for mode in ("memory", "multiprocess"):
        env = dict(os.environ)
        with tempfile.TemporaryDirectory() as d:
            if mode == "multiprocess":
                env["PROMETHEUS_MULTIPROC_DIR"] = d  # chosen at import: a fresh process
            out = subprocess.run([sys.executable, __file__, "--prometheus-client"], env=env, check=True,
                                 capture_output=True, text=True).stdout
        runs = [float(x) for x in out.split()]
        print(f"prometheus_client objects, {mode:12s}: min {min(runs):5.2f} us, median "
              f"{statistics.median(runs):5.2f} us per request")


if __name__ == "__main__":
    main()
