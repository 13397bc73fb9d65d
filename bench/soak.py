"""Chaos R6: a soak of mixed traffic against a real `aiaas serve` (one training worker): uploads, job creations
(tfidf-linear, so jobs finish), predictions and listings from a few clients at once, for AIAAS_SOAK_SECONDS
(default 600). Counts 5xx answers and the API process's RSS growth after warm-up (the first fifth).
AIAAS_SOAK_GLIBC_DEFAULTS=1 runs the same soak with the server on glibc's allocator defaults (the "before").

    make soak            # writes bench/results/soak.json
    AIAAS_SOAK_SECONDS=240 AIAAS_SOAK_OUT=/tmp/soak.json python -m bench.soak   # short, not in results/
"""

from __future__ import annotations

import json
import os
import platform
import random
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from tests.e2e.chaos import MODEL, make_stack
from tests.e2e.server import start_server
from tests.helpers.datasets import toy_csv

CLIENTS = 4
# AIAAS_SOAK_WEIGHTS="70,20,0,0": the mix of predict, list, upload, job (to tell growth by kind of work apart).
WEIGHTS = [int(w) for w in os.environ.get("AIAAS_SOAK_WEIGHTS", "70,20,7,3").split(",")]


def _client(base_url: str, key: str, stop: threading.Event, seed: int, stats: dict, lock: threading.Lock,
            t0: float, requests_at: list[tuple[float, str]]) -> None:
    rng = random.Random(seed)
    files: list[str] = []
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        while not stop.is_set():
            op = rng.choices(["predict", "list", "upload", "job"], weights=WEIGHTS)[0]
            if op == "predict":
                r = c.post("/v1/deployments/soak/predict", json={"inputs": [f"my parcel {rng.random()} is late"] * 4})
            elif op == "list":
                r = c.get(rng.choice(["/v1/files", "/v1/fine_tuning/jobs", "/v1/models", "/v1/deployments"]))
            elif op == "upload":
                r = c.post("/v1/files", files={"file": ("s.csv", toy_csv(rng.randint(20, 200), seed=rng.randrange(9)),
                                                        "text/csv")}, data={"purpose": "fine-tune"})
                if r.status_code == 200:
                    files.append(r.json()["id"])
            elif files:
                r = c.post("/v1/fine_tuning/jobs", json={"model": "tfidf-linear", "training_file": rng.choice(files)})
            else:
                continue
            with lock:
                requests_at.append((time.monotonic() - t0, op))
                stats[op] = stats.get(op, 0) + 1
                if r.status_code >= 500:
                    stats["5xx"] = stats.get("5xx", 0) + 1
                    stats.setdefault("5xx_samples", []).append(f"{op} {r.status_code} {r.text[:200]}")


def _per_minute(samples: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """The first sample of each minute, and the last sample."""
    picked: dict[int, tuple[float, int]] = {}
    for t, rss in samples:
        picked.setdefault(int(t // 60), (t, rss))
    out = list(picked.values())
    return out + [samples[-1]] if samples and out[-1] != samples[-1] else out


def main() -> None:
    seconds = float(os.environ.get("AIAAS_SOAK_SECONDS", "600"))
    tmp = Path(tempfile.mkdtemp(prefix="aiaas-soak-"))
    # AIAAS_SOAK_GLIBC_DEFAULTS=1: the server keeps glibc's allocator defaults (16 arenas on 2 cores, no
    # trim), as before the fix; the figures go to soak-glibc-defaults.json for comparison.
    glibc_defaults = os.environ.get("AIAAS_SOAK_GLIBC_DEFAULTS") == "1"
    allocator = {"AIAAS_MALLOC_ARENA_MAX": "0", "AIAAS_MALLOC_TRIM_SECONDS": "0"} if glibc_defaults else {}
    stack = make_stack(tmp, None, with_model=True, AIAAS_QUOTA_CONCURRENT_JOBS="0",
                       AIAAS_RATE_LIMIT_REQUESTS_PER_MINUTE="0", AIAAS_RATE_LIMIT_TOKENS_PER_MINUTE="0", **allocator)
    server = start_server(stack.env, tmp, job_workers=1)
    try:
        httpx.post(server.base_url + "/v1/deployments", json={"name": "soak", "model": MODEL, "min_replicas": 1},
                   headers={"Authorization": f"Bearer {stack.key}"}, timeout=60).raise_for_status()
        api = psutil.Process(server.proc.pid)
        stats: dict = {}
        lock = threading.Lock()
        stop = threading.Event()
        requests_at: list[tuple[float, str]] = []
        t0 = time.monotonic()
        threads = [threading.Thread(target=_client,
                                    args=(server.base_url, stack.key, stop, i, stats, lock, t0, requests_at))
                   for i in range(CLIENTS)]
        for t in threads:
            t.start()
        samples: list[tuple[float, int]] = []
        while time.monotonic() - t0 < seconds:
            samples.append((time.monotonic() - t0, api.memory_info().rss))
            time.sleep(min(5.0, seconds / 50))
        stop.set()
        for t in threads:
            t.join(60)
        listed = httpx.get(server.base_url + "/v1/models", headers={"Authorization": f"Bearer {stack.key}"},
                           timeout=120).json()["data"]
        models = sum(1 for m in listed if m["id"].startswith("ft:"))
    finally:
        server.stop()
    warm = [rss for t, rss in samples if t >= seconds / 5]
    growth = (warm[-1] - warm[0]) / warm[0] if len(warm) > 1 else 0.0
    # Requests answered after warm-up, for growth per 1,000 requests (runs at different rates compare).
    after_warmup = sum(1 for t, _ in requests_at if t >= seconds / 5)
    result = {
        "seconds": seconds, "clients": CLIENTS, "requests": {k: v for k, v in stats.items() if k in
                                                             ("predict", "list", "upload", "job")},
        "5xx": stats.get("5xx", 0), "5xx_samples": stats.get("5xx_samples", [])[:5],
        "rss_after_warmup_mb": round(warm[0] / 2**20, 1) if warm else None,
        "rss_end_mb": round(warm[-1] / 2**20, 1) if warm else None,
        "rss_growth_after_warmup": round(growth, 4),
        "requests_after_warmup": after_warmup,
        "rss_mb_per_1000_requests_after_warmup": (round((warm[-1] - warm[0]) / 2**20 / after_warmup * 1000, 3)
                                                  if len(warm) > 1 and after_warmup else None),
        "fine_tuned_models_at_end": models,
        # The curve, one sample a minute (seconds since the traffic started, MiB): growth that is still
        # climbing at the end is a leak, growth that levels off is warm-up.
        "rss_mb_by_minute": [[round(t), round(rss / 2**20, 1)] for t, rss in _per_minute(samples)],
        "machine": {"cpus": len(os.sched_getaffinity(0)),
                    "processor": platform.processor() or platform.machine(),
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
    }
    result["server_env"] = allocator
    # AIAAS_SOAK_OUT: where the figures go instead (a run on a loaded machine stays out of results/).
    out = Path(os.environ.get("AIAAS_SOAK_OUT") or Path(__file__).parent / "results" /
               ("soak-glibc-defaults.json" if glibc_defaults else "soak.json"))
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = result["5xx"] == 0 and growth <= 0.10
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
