"""Density: 200 fine-tuned models on one box, Zipf(1.1) traffic through the API (issue #18 items 3 and 5).

`make bench-density` (`python -m bench.density`; `--quick` or AIAAS_BENCH_DENSITY_QUICK=1 for a short
development run) does, against a real `aiaas serve` (SQLite, file blob store, encryption at rest):

1. builds the serving benchmark's MiniLM-L6 topic classifier once (bench/serving/model.py: a fine-tuned
   head, exported by aiaas's own export_model, int8 behind the accuracy guard, fp32 kept as fallback) and
   registers N copies of its export, as export_model writes it now (with the pre-optimised first-token
   graph stored), as N distinct fine-tuned models, each its own encrypted artifact (aiaas.json, tokenizer,
   int8 graph, first-token graph: the fp32 fallback is left out, see bench/density_setup.py), so every cache
   miss is a real load (decrypt, first-token session, tokenizer); deploys each as its own
   deployment with min_replicas=0 (nothing pinned: the model cache decides what stays loaded);
2. measures saturation: closed loop, 16 clients, Zipf(1.1) over the N deployments (misses included);
3. runs Zipf(1.1) traffic at half of that rate (open loop, Poisson arrivals, latency from the scheduled
   send time), deployment k with probability ~ k^-1.1; each request is classified resident or miss from
   the server's own log: a miss is a request whose model was being loaded while it waited (the cache logs
   "loaded model <artifact> in <s> s" at INFO, with the time); the load durations are the cold loads;
4. samples the API process's RSS every 20 ms and the cache's resident bytes (/metrics);
5. for the cost curve (item 5), the cache hit rate against the number of deployed models at the same
   budget: the same traffic over the first 10, 50, 100 and N deployments (`hit_rate_vs_models`).
6. where a cold load's time goes (`cold_load_breakdown`, bench/density_setup.py), on one more copy of the
   whole export, next to a load of the export without its stored first-token graph (rewritten at load).

Results: bench/results/density.json (`targets`, `hit_rate_vs_models`, the machine and load average) and
the "## Density" table in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.density_setup import build_model, cold_load_breakdown, deploy_all, int8_servable, register_copies
from bench.serving import load, procs
from bench.serving.aiaas_setup import HIGH_RPM, HIGH_TPM, _init
from bench.upload import RssSampler, machine

RESULTS = Path(__file__).resolve().parent / "results" / "density.json"
ZIPF_S = 1.1
P99_TARGET_MS = 100.0
COLD_TARGET_S = 0.5
MiB = 1 << 20


@dataclass(frozen=True)
class Plan:
    models: int
    budget_mb: int
    saturation_s: float
    warmup_s: float
    window_s: float
    curve: tuple[int, ...]
    curve_warmup_s: float
    curve_window_s: float


FULL = Plan(models=200, budget_mb=4096, saturation_s=20, warmup_s=30, window_s=120, curve=(10, 50, 100),
            curve_warmup_s=15, curve_window_s=30)
QUICK = Plan(models=24, budget_mb=1024, saturation_s=8, warmup_s=5, window_s=15, curve=(4, 12),
             curve_warmup_s=4, curve_window_s=8)


def zipf_weights(n: int, s: float = ZIPF_S) -> np.ndarray:
    w = np.arange(1, n + 1, dtype=np.float64) ** -s
    return w / w.sum()


# -- traffic ----------------------------------------------------------------------------------------
@dataclass
class Sample:
    model: int
    sent: float  # wall clock (time.time()), comparable with the server's log times
    ms: float
    status: int | None


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    seconds: float = 0.0


class Client:
    """Keep-alive connections per deployment (bench/serving/load.py's client), made inside one event loop."""

    def __init__(self, base: httpx.URL, names: list[str], bodies: list[bytes], key: str) -> None:
        headers = {"Authorization": f"Bearer {key}"}
        host, port = base.host, base.port or 80
        self.targets = [load.Target(host, port, f"/v1/deployments/{n}/predict", bodies, headers) for n in names]
        self.idle: dict[int, list[load.Connection]] = {}
        self.bodies = bodies

    async def send(self, k: int, i: int) -> int | None:
        pool = self.idle.setdefault(k, [])
        conn = pool.pop() if pool else load.Connection(self.targets[k])
        if conn.last_used and time.perf_counter() - conn.last_used > load.KEEPALIVE_EXPIRY_S:
            conn.close()  # the server may be closing it now: reconnect rather than race
        try:
            status, _ = await conn.post(self.bodies[i % len(self.bodies)])
        except (OSError, asyncio.IncompleteReadError, ValueError):
            conn.close()
            return None
        pool.append(conn)
        return status

    def close(self) -> None:
        for pool in self.idle.values():
            for conn in pool:
                conn.close()


async def _closed(make: Callable[[], Client], p: np.ndarray, clients: int, seconds: float, seed: int) -> Run:
    run, rng, client = Run(), np.random.default_rng(seed), make()
    stop = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        i = w
        while time.perf_counter() < stop:
            k = int(rng.choice(len(p), p=p))
            sent = time.time()
            status = await client.send(k, i)
            run.samples.append(Sample(k, sent, 1000 * (time.time() - sent), status))
            i += clients

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(w) for w in range(clients)))
    finally:
        client.close()
    run.seconds = time.perf_counter() - started
    return run


async def _open(make: Callable[[], Client], p: np.ndarray, rate: float, seconds: float, seed: int) -> Run:
    """Poisson arrivals; latency from each scheduled send time (a slow server cannot slow arrivals down)."""
    run, rng, picks, client = Run(), random.Random(seed), np.random.default_rng(seed), make()
    pending: set[asyncio.Task] = set()

    async def one(k: int, i: int, scheduled: float) -> None:
        status = await client.send(k, i)
        run.samples.append(Sample(k, scheduled, 1000 * (time.time() - scheduled), status))

    start, wall0 = time.perf_counter(), time.time()
    next_at, i = start, 0
    try:
        while next_at < start + seconds:
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(int(picks.choice(len(p), p=p)), i, wall0 + (next_at - start)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
            next_at += rng.expovariate(rate)
        if pending:
            await asyncio.wait(pending, timeout=60)
    finally:
        client.close()
    run.seconds = time.perf_counter() - start
    return run


def closed_loop(make: Callable[[], Client], n: int, clients: int, seconds: float, seed: int = 0) -> Run:
    return load._run(_closed(make, zipf_weights(n), clients, seconds, seed))


def open_loop(make: Callable[[], Client], n: int, rate: float, seconds: float, seed: int = 0) -> Run:
    return load._run(_open(make, zipf_weights(n), rate, seconds, seed))


# -- what the server saw ----------------------------------------------------------------------------
LOADED = re.compile(r"^loaded model (\S+) in ([0-9.]+) s")


def server_loads(log: Path) -> list[tuple[str, float, float]]:
    """(artifact, finished at (wall clock), seconds) of every model load the cache logged."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        m = LOADED.match(str(entry.get("message", "")))
        if m:
            out.append((m.group(1), float(entry["time"]), float(m.group(2))))
    return out


def classify(run: Run, loads: list[tuple[str, float, float]], artifacts: list[str]) -> np.ndarray:
    """True where a request waited for its model to load (a miss): a load of its artifact finished while it
    was waiting. A resident model cannot be loading (a model with requests in flight is never evicted)."""
    ends: dict[str, np.ndarray] = {}
    for artifact, end, _ in loads:
        ends.setdefault(artifact, np.empty(0))
        ends[artifact] = np.append(ends[artifact], end)
    miss = np.zeros(len(run.samples), dtype=bool)
    for j, s in enumerate(run.samples):
        e = ends.get(artifacts[s.model])
        if e is not None:
            done = s.sent + s.ms / 1000
            miss[j] = bool(np.any((e >= s.sent - 0.002) & (e <= done + 0.002)))
    return miss


def cache_counters(base_url: str) -> dict[str, float]:
    text = httpx.get(base_url + "/metrics", timeout=30).text
    out = {}
    for name in ("hits", "misses", "loads", "evictions", "resident_bytes", "models"):
        m = re.search(rf"^aiaas_model_cache_{name}(?:_total)?(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.MULTILINE)
        out[name] = float(m.group(1)) if m else 0.0
    return out


def pct(values: list[float] | np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if len(values) else None


def summarize(run: Run, miss: np.ndarray, before: dict, after: dict) -> dict:
    ok = np.array([s.status == 200 for s in run.samples], dtype=bool)
    ms = np.array([s.ms for s in run.samples])
    resident, cold = ms[ok & ~miss], ms[ok & miss]
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    return {
        "requests": len(run.samples), "seconds": round(run.seconds, 1), "rps": round(int(ok.sum()) / run.seconds, 1),
        "resident_requests": len(resident), "miss_requests": len(cold),
        "resident_p50_ms": pct(resident, 50), "resident_p99_ms": pct(resident, 99),
        "miss_request_p50_ms": pct(cold, 50), "miss_request_p99_ms": pct(cold, 99),
        "errors_5xx": sum(1 for s in run.samples if s.status is not None and s.status >= 500),
        "errors_other": sum(1 for s in run.samples if s.status is None or (s.status != 200 and s.status < 500)),
        "cache_hits": int(hits), "cache_misses": int(misses), "loads": int(after["loads"] - before["loads"]),
        "evictions": int(after["evictions"] - before["evictions"]),
        "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        "request_hit_rate": round(1 - float(miss[ok].mean()), 4) if ok.any() else None,
    }


class ResidentPoller:
    """The cache's resident bytes and model count (/metrics), at most every `every` s, in a thread."""

    def __init__(self, base_url: str, every: float = 0.5) -> None:
        import threading

        self.base_url, self.every, self.peak_bytes, self.peak_models = base_url, every, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                c = cache_counters(self.base_url)
            except httpx.HTTPError:
                continue
            self.peak_bytes = max(self.peak_bytes, c["resident_bytes"])
            self.peak_models = max(self.peak_models, c["models"])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# -- the run --------------------------------------------------------------------------------------
@dataclass
class Setup:
    server: procs.Server
    key: str
    names: list[str]
    artifacts: list[str]
    bodies: list[bytes]

    def client(self, n: int) -> Callable[[], Client]:
        return lambda: Client(httpx.URL(self.server.base_url), self.names[:n], self.bodies, self.key)

    def window(self, n: int, rate: float, warmup_s: float, window_s: float, seed: int) -> dict:
        """Zipf traffic over the first n deployments: a warm-up (not counted), then the measured window."""
        open_loop(self.client(n), n, rate, warmup_s, seed=seed + 1000)
        before = cache_counters(self.server.base_url)
        run = open_loop(self.client(n), n, rate, window_s, seed=seed)
        after = cache_counters(self.server.base_url)
        time.sleep(0.3)  # the log lines of the last loads
        loads = server_loads(self.server.log)
        t0, t1 = run.samples[0].sent if run.samples else 0, time.time()
        seconds = [s for _, end, s in loads if t0 <= end <= t1]
        return summarize(run, classify(run, loads, self.artifacts), before, after) | {
            "models": n, "rate_rps": round(rate, 1), "cold_load_s": cold_stats(seconds)}


def cold_stats(seconds: list[float]) -> dict:
    return {"count": len(seconds), "p50": pct(seconds, 50), "p99": pct(seconds, 99),
            "max": round(max(seconds), 3) if seconds else None}


def load_nice() -> int:
    """The load threads' nice value for this run: the server's default, or AIAAS_BENCH_DENSITY_LOAD_NICE (for an A/B)."""
    from aiaas.core.settings import Settings

    return int(os.environ.get("AIAAS_BENCH_DENSITY_LOAD_NICE", Settings.model_fields["model_load_nice"].default))


def start(plan: Plan, work: Path, export: Path) -> Setup:
    env = procs.bench_env(AIAAS_DATA_DIR=str(work / "data"), AIAAS_ENV="production",
                          AIAAS_RATE_LIMIT_REQUESTS_PER_MINUTE=HIGH_RPM, AIAAS_RATE_LIMIT_TOKENS_PER_MINUTE=HIGH_TPM,
                          AIAAS_MODEL_MEMORY_BUDGET_MB=str(plan.budget_mb), AIAAS_LOG_FORMAT="json",
                          AIAAS_QUOTA_DEPLOYMENTS=str(plan.models),  # default 50 an organisation: raised as an operator would
                          AIAAS_MODEL_LOAD_NICE=str(load_nice()))
    key = _init(env)
    t = time.perf_counter()
    models = register_copies(work / "data", key, export, plan.models, work)
    print(f"registered {len(models)} models in {time.perf_counter() - t:.0f} s", flush=True)
    port = procs.free_port()
    server = procs.start("aiaas", ["-m", "bench.density", "serve", "--port", str(port), "--job-workers", "0"],
                         env=env, log_dir=work, port=port)
    try:
        procs.wait_healthy(server, "/readyz")
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as api:
            names = deploy_all(api, models)
    except BaseException:
        server.stop()  # the caller has no server to stop yet
        raise
    texts = json.loads((export.parent / "data.json").read_text())["texts"]
    bodies = [json.dumps({"inputs": [t]}).encode() for t in texts]
    return Setup(server, key, names, [uri for _, uri in models], bodies)


def measure(plan: Plan, s: Setup) -> dict:
    rss = RssSampler(s.server.proc.pid)
    idle_rss = rss.rss()
    rss.start()
    poller = ResidentPoller(s.server.base_url)
    try:
        closed_loop(s.client(plan.models), plan.models, 16, plan.warmup_s, seed=7)  # fill the cache
        sat_run = closed_loop(s.client(plan.models), plan.models, 16, plan.saturation_s, seed=8)
        saturation = sum(1 for x in sat_run.samples if x.status == 200) / sat_run.seconds
        rate = 0.5 * saturation
        print(f"saturation {saturation:.1f} rps (Zipf over {plan.models}); half load {rate:.1f} rps", flush=True)
        main_window = s.window(plan.models, rate, plan.warmup_s, plan.window_s, seed=1)
        print(json.dumps(main_window), flush=True)
        curve = []
        for n in plan.curve:
            point = s.window(n, rate, plan.curve_warmup_s, plan.curve_window_s, seed=n)
            print(json.dumps(point), flush=True)
            curve.append(point)
    finally:
        poller.stop()
        peak_rss = rss.stop()
    return {"idle_rss_mb": round(idle_rss / MiB, 1), "peak_rss_mb": round(peak_rss / MiB, 1),
            "cache_resident_peak_mb": round(poller.peak_bytes / MiB, 1), "cache_models_peak": int(poller.peak_models),
            "saturation_rps": round(saturation, 1), "half_load": main_window, "curve": [*curve, main_window],
            "server_alive": s.server.proc.poll() is None}


def targets(plan: Plan, m: dict, server_log: str) -> dict:
    w = m["half_load"]
    p99, cold = w["resident_p99_ms"], w["cold_load_s"]["p99"]
    oom = m["server_alive"] is False or "MemoryError" in server_log or "std::bad_alloc" in server_log
    rss_growth = m["peak_rss_mb"] - m["idle_rss_mb"]
    return {
        "p99_resident_ms": {"value": p99, "target": f"<= {P99_TARGET_MS:g}",
                            "met": p99 is not None and p99 <= P99_TARGET_MS},
        "cold_load_p99_s": {"value": cold, "target": f"<= {COLD_TARGET_S:g}",
                            "met": cold is not None and cold <= COLD_TARGET_S},
        "no_oom": {"value": not oom, "target": "server alive, no MemoryError", "met": not oom},
        "no_5xx": {"value": w["errors_5xx"], "target": "0", "met": w["errors_5xx"] == 0},
        "rss_within_budget": {"value": round(rss_growth, 1),
                              "target": f"API RSS growth over idle <= budget ({plan.budget_mb} MiB)",
                              "met": rss_growth <= plan.budget_mb},
        "hit_rate": {"value": w["hit_rate"], "target": "reported", "met": w["hit_rate"] is not None},
    }


def serve() -> None:
    """`aiaas serve ...` with the model cache's INFO lines kept (uvicorn's log config sets the root to WARNING):
    one line per load or eviction, never per request."""
    import logging
    import sys

    from aiaas.cli.main import app

    logging.getLogger("aiaas.serving.cache").setLevel(logging.INFO)
    app(args=sys.argv[1:], prog_name="aiaas")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", default=os.environ.get("AIAAS_BENCH_DENSITY_QUICK") == "1",
                   help="a short development run (fewer models, short windows); not for results")
    args = p.parse_args()
    plan = QUICK if args.quick else FULL
    load_start = os.getloadavg()
    started = time.time()
    export = build_model()
    if not int8_servable():
        raise SystemExit("this CPU lacks int8 dot products: the copies would need their fp32 graph (see register_copies)")
    work = Path(tempfile.mkdtemp(prefix="aiaas-density-"))
    setup = None
    try:
        setup = start(plan, work, export)
        measured = measure(plan, setup)
        measured["cold_load_breakdown"] = cold_load_breakdown(work / "data", export)
        result = {
            "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "quick": args.quick,
            "machine": machine() | {"load_average_start": load_start, "load_average_end": os.getloadavg(),
                                    "memory_total_mb": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / MiB)},
            "model": "all-MiniLM-L6-v2 + fine-tuned 6-topic head (bench/serving/model.py), int8 ONNX chosen by the "
                     "accuracy guard (fp32 kept in the artifact), pre-optimised first-token graph stored; each copy its own "
                     "encrypted artifact",
            "models": plan.models, "zipf_s": ZIPF_S, "memory_budget_mb": plan.budget_mb, "plan": vars(plan),
            "model_load_nice": load_nice(),
            **measured,
            "hit_rate_vs_models": [{"models": c["models"], "hit_rate": c["hit_rate"],
                                    "request_hit_rate": c["request_hit_rate"], "budget_mb": plan.budget_mb,
                                    "rate_rps": c["rate_rps"]} for c in measured["curve"]],
            "targets": targets(plan, measured, setup.server.logs(tail=10_000_000)),
            "bench_seconds": round(time.time() - started),
        }
        out = RESULTS if not args.quick else Path(tempfile.gettempdir()) / "density-quick.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["targets"], indent=2), f"\nwritten to {out}", sep="")
    finally:
        if setup is not None:
            setup.server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import sys

    serve() if sys.argv[1:2] == ["serve"] else main()
