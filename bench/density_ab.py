"""Same-run A/B of the model cache's load priority (`python -m bench.density_ab`): the latency of
requests to resident models while the cache loads others, with the load thread at nice +10 (the
default, cache_policy.LOAD_NICE), at 5, or at the serving threads' priority, in alternating windows.

In one process: aiaas's ModelCache (budget for `resident` MiniLM-L6 int8 models, the density bench's
export with its stored first-token graph, loaded by `load_predictor` from plain files: no decryption),
two inference threads (as `aiaas serve` on 2 cores), open-loop Poisson arrivals, Zipf(1.1) over
`models` keys, one text per request, latency from the scheduled send time. The arms share the
cache, its eviction policy and the traffic; they differ only in which load executor runs the next load
(each made by cache_policy.load_executor, at nice 10, 5 or 0 by default). A request is *resident* when its model was
loaded when it arrived. The first second of each window is left out (a load from the other arm may
still run). Results: bench/results/density_ab.json and bench/README.md ("Density").
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.serving.cache import ModelCache
from aiaas.serving.cache_policy import LOAD_NICE, load_executor

from bench.density_setup import as_exported_now, build_model
from bench.serving.sentences import generate
from bench.upload import machine

RESULTS = Path(__file__).resolve().parent / "results" / "density_ab.json"
SETTLE_S = 1.0


class Switch(concurrent.futures.Executor):
    """An executor that hands each job to whichever of its executors is current."""

    def __init__(self, executors: dict[str, concurrent.futures.Executor], current: str) -> None:
        self.executors, self.current = executors, current

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        return self.executors[self.current].submit(fn, *args, **kwargs)


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


async def run(artifact: Path, *, models: int, resident: int, rate: float, window_s: float, windows: int,
              seed: int, nices: list[int]) -> dict[str, Any]:
    from aiaas.serving.runtime import load_predictor

    probe = load_predictor(artifact, full_graph=(artifact / "model.int8.onnx").read_bytes)
    size = probe.memory_bytes
    probe.close()
    arms = {f"nice_{n}": load_executor(1, n) for n in nices}
    switch = Switch(arms, next(iter(arms)))
    loads: list[tuple[str, float]] = []  # (arm it started in, seconds)

    def load(key: str) -> Any:
        arm, started = switch.current, time.perf_counter()
        # As the loader serves it: the full graph's bytes read again only if an embeddings request opens it.
        predictor = load_predictor(artifact, full_graph=(artifact / "model.int8.onnx").read_bytes)
        loads.append((arm, time.perf_counter() - started))
        return predictor

    cache = ModelCache(load, memory_budget_bytes=resident * size,
                       idle_unload_s=None, executor=switch, max_concurrent_loads=1)
    infer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="infer")
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    weights = np.arange(1, models + 1, dtype=np.float64) ** -1.1
    keys = [f"m{i:03d}" for i in range(models)]
    texts = generate(200, seed=seed)[0]
    rows: list[tuple[str, bool, float]] = []  # (arm, resident, latency ms)
    measuring: dict[str, bool] = {"on": False}

    async def request(key: str, text: str, scheduled: float, arm: str) -> None:
        hit = key in cache
        async with cache.use(key) as predictor:
            await loop.run_in_executor(infer, lambda: predictor.infer([text], probabilities=True, embeddings=False))
        if measuring["on"]:
            rows.append((arm, hit, (time.perf_counter() - scheduled) * 1000))

    async def traffic(seconds: float, arm: str, tasks: list[asyncio.Task[None]]) -> None:
        start = time.perf_counter()
        at = start
        picks = iter(rng.choices(keys, weights=list(weights), k=int(rate * seconds * 3) + 10))
        while True:
            at += rng.expovariate(rate)
            if at - start >= seconds:
                break
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            measuring["on"] = time.perf_counter() - start >= SETTLE_S and arm != "warmup"
            tasks.append(asyncio.create_task(request(next(picks), rng.choice(texts), at, arm)))

    tasks: list[asyncio.Task[None]] = []
    await traffic(window_s, "warmup", tasks)
    names = list(arms)  # each round visits every arm, in an order rotated (and reversed every other round)
    order = [arm for i in range(windows)
             for arm in (names[i % len(names):] + names[: i % len(names)])[:: 1 if i % 2 == 0 else -1]]
    for arm in order:
        switch.current = arm
        await traffic(window_s, arm, tasks)
    await asyncio.gather(*tasks)
    stats = cache.stats()
    await cache.close()
    infer.shutdown()
    for pool in arms.values():
        pool.shutdown()
    out: dict[str, Any] = {"arms": {}}
    for arm in arms:
        res = [ms for a, hit, ms in rows if a == arm and hit]
        miss = [ms for a, hit, ms in rows if a == arm and not hit]
        out["arms"][arm] = {"resident_requests": len(res), "resident_p50_ms": pct(res, 50),
                            "resident_p90_ms": pct(res, 90), "resident_p95_ms": pct(res, 95),
                            "resident_p99_ms": pct(res, 99),
                            "resident_mean_ms": round(float(np.mean(res)), 1) if res else None, "miss_requests": len(miss), "miss_p50_ms": pct(miss, 50),
                            "loads": sum(a == arm for a, _ in loads),
                            "load_p50_ms": pct([s * 1000 for a, s in loads if a == arm], 50),
                            "load_p99_ms": pct([s * 1000 for a, s in loads if a == arm], 99)}
    out["window_order"] = order
    out["loads"], out["hits"], out["misses"] = stats["loads"], stats["hits"], stats["misses"]
    out["model_mib"] = size >> 20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=30)
    parser.add_argument("--resident", type=int, default=8)
    parser.add_argument("--rate", type=float, default=8.0, help="requests per second")
    parser.add_argument("--window-s", type=float, default=15.0)
    parser.add_argument("--windows", type=int, default=6, help="windows per arm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nice", default=f"{LOAD_NICE},5,0", help="the arms: load thread nice values")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "aiaas-density-ab"
    artifact = work / "onnx"
    if not artifact.is_dir():
        as_exported_now(build_model(), artifact, keep_fp32=False)
    load_before = os.getloadavg()
    result = asyncio.run(run(artifact, models=args.models, resident=args.resident, rate=args.rate,
                             window_s=args.window_s, windows=args.windows, seed=args.seed,
                             nices=[int(n) for n in args.nice.split(",")]))
    result = {"params": vars(args) | {"no_save": None}, "load_nice": LOAD_NICE, **result,
              "machine": machine(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    print(json.dumps(result, indent=2))
    if not args.no_save:
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
