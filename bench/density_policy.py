"""Which models the cache keeps: hit rate of aiaas's ModelCache under the density bench's traffic, by
eviction window (`python -m bench.density_policy`; results in bench/results/density_policy.json).

The real ModelCache (aiaas/serving/cache.py) with a loader that returns at once a model of the size the
cache counts for the density bench's MiniLM-L6 int8 (79 MiB while a loaded model kept its full graph's bytes,
57 MiB since it reads them again on an embeddings request), the bench's budget (4096 MiB), and one
seeded Zipf(1.1) request sequence over N models replayed through every policy. `recent_window=1` is pure
LRU (every count is halved to 0 at once, so eviction falls back to least recently used); larger windows
evict by recent request count. No CPU time is measured here: only which requests find their model loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import numpy as np

from aiaas.serving.cache import ModelCache

RESULTS = Path(__file__).resolve().parent / "results" / "density_policy.json"
ZIPF_S = 1.1
# What the cache counts for one MiniLM-L6 int8 first-token model: the first-token session (sessions.session_memory
# of its 23.0 MB graph), plus the full graph's 23.1 MB while a loaded model kept them (before).
MODEL_MIB = {"full_graph_kept": 79, "full_graph_read_on_demand": 57}
BUDGET_BYTES = 4096 << 20
WINDOWS = (1, 250, 500, 1000, 2000, 5000)


class _Model:
    def __init__(self, size: int) -> None:
        self.memory_bytes = size

    def close(self) -> None:
        pass


def trace(models: int, requests: int, seed: int) -> list[str]:
    weights = np.arange(1, models + 1, dtype=np.float64) ** -ZIPF_S
    picks = np.random.default_rng(seed).choice(models, size=requests, p=weights / weights.sum())
    return [f"m{int(i):03d}" for i in picks]


async def replay(keys: list[str], window: int, warmup: int, size: int) -> dict[str, float]:
    cache = ModelCache(lambda key: _Model(size), memory_budget_bytes=BUDGET_BYTES, idle_unload_s=None,
                       executor=None, recent_window=window, load_nice=0)
    hits = 0
    try:
        for i, key in enumerate(keys):
            hit = key in cache
            async with cache.use(key):
                pass
            hits += hit and i >= warmup
        measured = len(keys) - warmup
        return {"hit_rate": round(hits / measured, 4), "loads_per_1000": round(1000 * (measured - hits) / measured, 1),
                "resident": len(cache.stats()["models"])}
    finally:
        await cache.close()


def static_best(models: int, size: int) -> float:
    """The hit rate of keeping the most requested models that fit, forever (knowing the distribution)."""
    weights = np.arange(1, models + 1, dtype=np.float64) ** -ZIPF_S
    return round(float(weights[: BUDGET_BYTES // size].sum() / weights.sum()), 4)


async def main(requests: int, warmup: int, seeds: int) -> dict:
    out: dict = {"zipf_s": ZIPF_S, "model_mib": MODEL_MIB, "budget_mib": BUDGET_BYTES >> 20,
                 "requests": requests, "warmup": warmup, "seeds": seeds, "by_size": {}}
    for label, mib in MODEL_MIB.items():
        by_models: dict[str, dict] = {}
        for models in (100, 200):  # 10 and 50 fit the budget whole
            rows: dict[str, dict[str, float]] = {}
            for window in WINDOWS:
                runs = [await replay(trace(models, requests + warmup, seed), window, warmup, mib << 20)
                        for seed in range(seeds)]
                rows[str(window)] = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]}
            by_models[str(models)] = {"static_top_k_hit_rate": static_best(models, mib << 20), "by_window": rows}
        out["by_size"][label] = by_models
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    result = asyncio.run(main(args.requests, args.warmup, args.seeds))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
