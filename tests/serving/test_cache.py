"""ModelCache: one load per key, LRU under a budget, idle unload (scale to zero), pinning.

Most tests use a small stand-in model (anything with memory_bytes and close()) so the
budget arithmetic is exact; one test runs the real ONNX predictor through the cache.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from aiaas.core.errors import Unavailable
from aiaas.serving.cache import ModelCache
from aiaas.serving.runtime import load_predictor


class Model:
    def __init__(self, key: str, size: int) -> None:
        self.key, self.memory_bytes, self.closed = key, size, False

    def close(self) -> None:
        self.closed = True


class Loader:
    def __init__(self, sizes: dict[str, int] | None = None, delay: float = 0.0) -> None:
        self.sizes = sizes or {}
        self.delay = delay
        self.calls: list[str] = []
        self.threads: set[int] = set()
        self.fail: set[str] = set()

    def __call__(self, key: str) -> Model:
        self.calls.append(key)
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        if key in self.fail:
            raise RuntimeError(f"cannot load {key}")
        return Model(key, self.sizes.get(key, 100))


def test_constructor_validates_arguments():
    with pytest.raises(TypeError):
        ModelCache(None, memory_budget_bytes=1, idle_unload_s=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="memory_budget_bytes"):
        ModelCache(Loader(), memory_budget_bytes=0, idle_unload_s=None)
    with pytest.raises(ValueError, match="idle_unload_s"):
        ModelCache(Loader(), memory_budget_bytes=10, idle_unload_s=0)


def test_concurrent_gets_load_once_off_the_loop():
    async def main():
        loader = Loader(delay=0.1)
        cache = ModelCache(loader, memory_budget_bytes=1000, idle_unload_s=None)
        models = await asyncio.gather(*(cache.get("m") for _ in range(20)))
        stats = cache.stats()
        await cache.close()
        return loader, models, stats

    loader, models, stats = asyncio.run(main())
    assert loader.calls == ["m"]
    assert all(m is models[0] for m in models)
    assert threading.get_ident() not in loader.threads
    assert stats["loads"] == 1 and stats["misses"] == 20


def test_failed_load_reaches_all_waiters_and_is_retried():
    async def main():
        loader = Loader(delay=0.05)
        loader.fail.add("m")
        cache = ModelCache(loader, memory_budget_bytes=1000, idle_unload_s=None)
        results = await asyncio.gather(*(cache.get("m") for _ in range(3)), return_exceptions=True)
        loader.fail.clear()
        model = await cache.get("m")
        await cache.close()
        return loader, results, model

    loader, results, model = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert loader.calls == ["m", "m"] and model.key == "m"


def test_lru_eviction_under_a_tiny_budget():
    async def main():
        cache = ModelCache(Loader(), memory_budget_bytes=250, idle_unload_s=None)
        a = await cache.get("a")
        await cache.get("b")
        await cache.get("a")  # a is now the most recently used
        await cache.get("c")  # 300 > 250: evict the LRU, which is b
        keys = sorted(cache.stats()["models"])
        memory = cache.memory_bytes
        await cache.close()
        return a, keys, memory

    a, keys, memory = asyncio.run(main())
    assert keys == ["a", "c"] and memory == 200
    assert a.closed  # closed by close() at the end, not before


def test_model_with_requests_in_flight_is_not_evicted():
    async def main():
        loader = Loader()
        cache = ModelCache(loader, memory_budget_bytes=150, idle_unload_s=None)
        async with cache.use("busy") as busy:
            await cache.get("other")  # over budget; "busy" is oldest but in use, so "other" stays too
            assert sorted(cache.stats()["models"]) == ["busy", "other"]
            assert not busy.closed
        # Request finished: back under budget by evicting the least recently used idle one.
        keys = sorted(cache.stats()["models"])
        await cache.close()
        return busy, keys

    busy, keys = asyncio.run(main())
    assert keys == ["other"]
    assert busy.closed


def test_model_larger_than_the_budget_is_refused():
    async def main():
        cache = ModelCache(Loader({"huge": 10_000}), memory_budget_bytes=1000, idle_unload_s=None)
        with pytest.raises(Unavailable, match="budget"):
            await cache.get("huge")
        assert "huge" not in cache
        await cache.close()

    asyncio.run(main())


def test_idle_models_unload_and_reload_transparently_unless_pinned():
    async def main():
        loader = Loader()
        cache = ModelCache(loader, memory_budget_bytes=1000, idle_unload_s=0.1)
        cache.pin("pinned", True)
        first = await cache.get("idle")
        await cache.get("pinned")
        await asyncio.sleep(0.4)  # the sweeper runs every idle_unload_s / 4
        after_idle = sorted(cache.stats()["models"])
        again = await cache.get("idle")  # scale from zero
        stats = cache.stats()
        cache.pin("pinned", False)
        await asyncio.sleep(0.4)
        after_unpin = sorted(cache.stats()["models"])
        await cache.close()
        return loader, first, again, after_idle, stats, after_unpin

    loader, first, again, after_idle, stats, after_unpin = asyncio.run(main())
    assert after_idle == ["pinned"]
    assert first.closed and again is not first
    assert loader.calls.count("idle") == 2
    assert stats["idle_unloads"] == 1 and stats["pinned"] == ["pinned"]
    assert after_unpin == []


def test_unload_idle_with_an_injected_clock_skips_busy_models():
    now = [0.0]

    async def main():
        cache = ModelCache(Loader(), memory_budget_bytes=1000, idle_unload_s=60, clock=lambda: now[0])
        await cache.get("a")
        async with cache.use("b"):
            now[0] = 120.0
            assert cache.unload_idle() == ["a"]  # b is in use
        now[0] = 150.0
        assert cache.unload_idle() == []  # b was last used at 120
        now[0] = 181.0
        assert cache.unload_idle() == ["b"]
        await cache.close()

    asyncio.run(main())


def test_evict_during_load_discards_the_stale_model():
    async def main():
        loader = Loader(delay=0.1)
        cache = ModelCache(loader, memory_budget_bytes=1000, idle_unload_s=None)
        pending = asyncio.ensure_future(cache.get("m"))
        await asyncio.sleep(0.03)
        cache.evict("m")  # e.g. a new version was deployed while v1 was loading
        model = await pending
        await cache.close()
        return loader, model

    loader, model = asyncio.run(main())
    assert loader.calls == ["m", "m"]  # the waiter got a fresh load, not the stale one
    assert model.key == "m"


def test_closed_cache_refuses_requests():
    async def main():
        cache = ModelCache(Loader(), memory_budget_bytes=1000, idle_unload_s=1)
        model = await cache.get("m")
        await cache.close()
        with pytest.raises(Unavailable):
            await cache.get("m")
        return model

    assert asyncio.run(main()).closed


def test_real_predictor_through_the_cache(single_label):
    artifact = single_label[1]

    async def main():
        cache = ModelCache(
            lambda key: load_predictor(artifact), memory_budget_bytes=1 << 30, idle_unload_s=None
        )
        async with cache.use("v1") as predictor:
            probs = predictor.predict(["refund please"])
        stats = cache.stats()
        await cache.close()
        return predictor, probs, stats

    predictor, probs, stats = asyncio.run(main())
    assert probs.shape == (1, 3)
    assert stats["models"]["v1"]["bytes"] == predictor.memory_bytes > 0
    assert predictor.closed


class CountingLoader(Loader):
    """Records how many loads run at once, and the cache's accounted memory when each starts."""

    def __init__(self, cache_ref: list[ModelCache], sizes: dict[str, int] | None = None, delay: float = 0.0):
        super().__init__(sizes, delay)
        self.cache_ref = cache_ref
        self.running = self.most = 0
        self.memory_at_start: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, key: str) -> Model:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.memory_at_start[key] = self.cache_ref[0].memory_bytes
        try:
            return super().__call__(key)
        finally:
            with self._lock:
                self.running -= 1


def test_room_is_made_before_a_model_loads_so_the_budget_holds_during_the_load():
    async def main():
        ref: list[ModelCache] = []
        loader = CountingLoader(ref)
        cache = ModelCache(loader, memory_budget_bytes=250, idle_unload_s=None, max_concurrent_loads=1)
        ref.append(cache)
        for key in ("a", "b", "c"):  # 100 each: c needs room, a (least recently used) goes first
            await cache.get(key)
        await cache.get("a")  # a was evicted: its reload needs room again, now b goes
        stats = cache.stats()
        await cache.close()
        return loader, stats

    loader, stats = asyncio.run(main())
    # While c loaded, only b was resident (a already evicted): loaded + loading never passed the budget.
    assert loader.memory_at_start == {"a": 100, "b": 100, "c": 100}
    assert sorted(stats["models"]) == ["a", "c"] and stats["evictions"] == 2
    assert stats["reserved_bytes"] == 0


def test_loads_are_bounded_and_hits_do_not_wait_for_them():
    async def main():
        ref: list[ModelCache] = []
        loader = CountingLoader(ref, delay=0.6)
        cache = ModelCache(loader, memory_budget_bytes=10_000, idle_unload_s=None, max_concurrent_loads=2)
        ref.append(cache)
        await cache.get("hot")
        loads = asyncio.gather(*(cache.get(f"cold{i}") for i in range(6)))
        await asyncio.sleep(0.02)
        started = time.perf_counter()
        await cache.get("hot")  # resident: answered while six loads queue for two slots
        hit_s = time.perf_counter() - started
        queued = sorted(cache.stats()["loading"])
        await loads
        await cache.close()
        return loader, hit_s, queued

    loader, hit_s, queued = asyncio.run(main())
    assert loader.most == 2  # never more than max_concurrent_loads at once
    assert hit_s < 0.3  # a hit that waited for a load would take ~0.6 s (room for busy shared cores)
    assert queued == [f"cold{i}" for i in range(6)]  # one load each, queued or running
    assert sorted(loader.calls) == sorted(["hot", *(f"cold{i}" for i in range(6))])


def test_max_concurrent_loads_is_validated_and_defaults_to_half_the_cores(monkeypatch):
    with pytest.raises(ValueError, match="max_concurrent_loads"):
        ModelCache(Loader(), memory_budget_bytes=10, idle_unload_s=None, max_concurrent_loads=0)
    monkeypatch.setattr("aiaas.serving.cache.usable_cores", lambda: 2)
    assert ModelCache(Loader(), memory_budget_bytes=10, idle_unload_s=None).stats()["max_concurrent_loads"] == 1
    monkeypatch.setattr("aiaas.serving.cache.usable_cores", lambda: 8)
    assert ModelCache(Loader(), memory_budget_bytes=10, idle_unload_s=None).stats()["max_concurrent_loads"] == 4


def test_a_close_while_loads_queue_does_not_run_them():
    async def main():
        loader = Loader(delay=0.1)
        cache = ModelCache(loader, memory_budget_bytes=10_000, idle_unload_s=None, max_concurrent_loads=1)
        gets = asyncio.gather(*(cache.get(k) for k in ("a", "b", "c")), return_exceptions=True)
        await asyncio.sleep(0.02)
        await cache.close()
        return loader, await gets

    loader, results = asyncio.run(main())
    assert loader.calls == ["a"]  # b and c were still waiting for the slot
    assert all(isinstance(r, Unavailable) for r in results[1:])


def test_a_model_that_grows_while_in_use_is_counted_at_its_new_size():
    """A predictor opens its full graph on the first embeddings request (runtime.Predictor): the cache
    counts what it has open, so the growth evicts others when the request ends."""

    async def main():
        loader = Loader({"a": 400, "b": 400})
        cache = ModelCache(loader, memory_budget_bytes=1000, idle_unload_s=None)
        await cache.get("a")
        async with cache.use("b") as model:
            assert cache.memory_bytes == 800
            model.memory_bytes = 700  # e.g. it opened a lazy graph for this request
        stats = cache.stats()
        await cache.close()
        return stats

    stats = asyncio.run(main())
    assert stats["memory_bytes"] == 700  # "a" (least recently used) was evicted to fit b's new size
    assert list(stats["models"]) == ["b"]
