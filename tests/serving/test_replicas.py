"""max_replicas on one node: a hot deployment holds at most that many inference threads, so a cold one
next to it still answers at once (issue 14, item 7).

Two deployments share LocalRuntime's 3 inference threads. Their models are the real ONNX tiny BERT,
made heavy: each batch also holds its thread 40 ms (a sleep, as a large model's forward pass holds a
thread with the GIL released), so what is measured is how threads are shared, not the shared CPU cores.
The hot deployment is flooded by 24 concurrent callers; the cold one gets one request at a time.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

import pytest

from aiaas.serving.interface import ModelRef
from aiaas.serving.local import LocalRuntime
from aiaas.serving.runtime import load_predictor

BATCH_S = 0.04
THREADS = 3


class Heavy:
    """A real predictor whose batches take at least BATCH_S; counts its batches running at once."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def infer(self, texts, **kw):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(BATCH_S)
            return self.inner.infer(texts, **kw)
        finally:
            with self.lock:
                self.running -= 1


async def _skewed(artifact, hot_bound: int | None) -> tuple[list[float], int]:
    """Cold latencies (s) while the hot deployment is flooded; the most hot batches seen running at once."""
    models = {"hot": Heavy(load_predictor(artifact)), "cold": Heavy(load_predictor(artifact))}
    runtime = LocalRuntime(lambda key: models[key], threads=THREADS, memory_budget_bytes=1 << 34, idle_unload_s=None)
    hot, cold = ModelRef("hot", "dep-hot", hot_bound), ModelRef("cold", "dep-cold")
    await runtime.predict(hot, ["warm"])
    await runtime.predict(cold, ["warm"])
    stop = asyncio.Event()

    async def flood() -> None:
        while not stop.is_set():
            await runtime.predict(hot, ["my card was charged twice please refund"])

    callers = [asyncio.create_task(flood()) for _ in range(24)]
    await asyncio.sleep(0.3)  # the hot deployment's queue is full by now
    latencies = []
    for _ in range(12):
        t0 = time.perf_counter()
        await runtime.predict(cold, ["where is my package"])
        latencies.append(time.perf_counter() - t0)
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.gather(*callers)
    await runtime.aclose()
    return latencies, models["hot"].most


@pytest.mark.slow
async def test_a_hot_deployment_bounded_by_max_replicas_leaves_threads_for_a_cold_one(single_label):
    _, artifact = single_label
    bounded, most_bounded = await _skewed(artifact, hot_bound=1)
    unbounded, most_unbounded = await _skewed(artifact, hot_bound=None)
    p50_bounded, p50_unbounded = statistics.median(bounded), statistics.median(unbounded)
    print(f"cold p50 with the hot deployment bounded to 1: {p50_bounded * 1000:.1f} ms "
          f"(max {max(bounded) * 1000:.1f}); unbounded: {p50_unbounded * 1000:.1f} ms "
          f"(max {max(unbounded) * 1000:.1f})")
    assert most_bounded == 1 and most_unbounded == THREADS  # the bound holds; without it the hot one takes all
    # Bounded, a cold request runs at once on a free thread: its own batch plus scheduling.
    assert p50_bounded < 3 * BATCH_S, bounded
    # Unbounded, it waits for a hot worker to end its turn of batches first.
    assert p50_unbounded > 1.5 * p50_bounded, (bounded, unbounded)
