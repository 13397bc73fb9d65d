"""ModelCache's policies (serving/cache_policy.py): loads run in their own lower-priority threads, and eviction
keeps the models in steady use over one-off loads."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

from aiaas.serving.cache import ModelCache
from aiaas.serving.cache_policy import RecentUses, load_executor, lower_thread_priority

from .test_cache import Loader

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


class PriorityLoader(Loader):
    """Records the nice value and the name of the thread each load ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, str]] = []

    def __call__(self, key: str):  # type: ignore[no-untyped-def]
        self.seen.append((_nice(), threading.current_thread().name))
        return super().__call__(key)


@linux_only
def test_loads_run_in_their_own_threads_at_a_lower_priority_and_serving_threads_keep_theirs():
    base = _nice()

    async def main():
        loader = PriorityLoader()
        cache = ModelCache(loader, memory_budget_bytes=1000, idle_unload_s=None, max_concurrent_loads=2)
        await asyncio.gather(cache.get("a"), cache.get("b"))
        await cache.get("c")
        # The loop's default executor (where requests' work runs) and the loop's thread are untouched.
        default = await asyncio.get_running_loop().run_in_executor(None, _nice)
        await cache.close()
        return loader.seen, default, _nice()

    seen, default, loop_thread = asyncio.run(main())
    assert [nice for nice, _ in seen] == [min(19, base + 10)] * 3
    assert all(name.startswith("aiaas-load") for _, name in seen)
    assert default == base and loop_thread == base


@linux_only
def test_load_nice_zero_and_a_given_executor_leave_the_priority_alone():
    base = _nice()

    async def main(**kwargs):
        loader = PriorityLoader()
        cache = ModelCache(loader, memory_budget_bytes=1000, idle_unload_s=None, **kwargs)
        await cache.get("a")
        await cache.close()
        return loader.seen[0][0]

    assert asyncio.run(main(load_nice=0)) == base
    assert asyncio.run(main(executor=None, load_nice=3)) == min(19, base + 3)
    with load_executor(1, nice=0) as pool:
        assert asyncio.run(main(executor=pool)) == base
    with pytest.raises(ValueError, match="load_nice"):
        ModelCache(Loader(), memory_budget_bytes=10, idle_unload_s=None, load_nice=20)


@linux_only
def test_lowering_a_thread_priority_does_not_touch_the_others():
    base = _nice()
    seen: list[int] = []

    def work() -> None:
        lower_thread_priority(5)
        seen.append(_nice())

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [min(19, base + 5)] and _nice() == base


def test_a_model_in_steady_use_outlives_a_more_recent_one_off():
    async def main():
        loader = Loader()
        cache = ModelCache(loader, memory_budget_bytes=300, idle_unload_s=None)
        for _ in range(5):
            await cache.get("head")  # used again and again, but least recently of the three below
        await cache.get("second")
        await cache.get("second")
        await cache.get("tail-1")  # one-off: the cache is full now (300)
        await cache.get("tail-2")  # needs room: LRU would evict "head"; the one-off goes instead
        keys = sorted(cache.stats()["models"])
        await cache.close()
        return keys, loader.calls

    keys, calls = asyncio.run(main())
    assert keys == ["head", "second", "tail-2"]
    assert calls == ["head", "second", "tail-1", "tail-2"]  # head never reloaded


def test_window_one_is_pure_lru():
    async def main():
        cache = ModelCache(Loader(), memory_budget_bytes=300, idle_unload_s=None, recent_window=1)
        for _ in range(5):
            await cache.get("head")
        for key in ("second", "tail-1", "tail-2"):
            await cache.get(key)
        keys = sorted(cache.stats()["models"])
        await cache.close()
        return keys

    assert asyncio.run(main()) == ["second", "tail-1", "tail-2"]


def test_requests_waiting_for_a_load_keep_it_from_the_next_loads_eviction():
    """One load slot, budget for one model: 'b' queues behind 'a'; when 'a' finishes, 'b's load must not evict
    'a' before a's waiting requests hold it (they would have to load it again)."""

    async def main():
        loader = Loader(delay=0.05)
        cache = ModelCache(loader, memory_budget_bytes=100, idle_unload_s=None, max_concurrent_loads=1)
        got = await asyncio.gather(cache.get("a"), cache.get("a"), cache.get("b"))
        await cache.close()
        return [m.key for m in got], loader.calls

    keys, calls = asyncio.run(main())
    assert keys == ["a", "a", "b"]
    assert calls == ["a", "b"]


def test_recent_uses_age_by_halving_and_forget_zeros():
    uses = RecentUses(window=4)
    for key in ("a", "a", "a", "b"):  # the 4th request halves: a 3 -> 1, b 1 -> forgotten
        uses.add(key)
    assert (uses["a"], uses["b"]) == (1, 0)
    uses.add("b")
    uses.forget("a")
    assert (uses["a"], uses["b"]) == (0, 1)
    with pytest.raises(ValueError, match="window"):
        RecentUses(window=0)


@linux_only
def test_the_local_runtime_loads_at_the_settings_nice():
    from aiaas.core.settings import Settings
    from aiaas.serving.local import LocalRuntime

    base = _nice()
    assert Settings().model_load_nice == 10
    with pytest.raises(ValueError):
        Settings(model_load_nice=20)

    async def main(**kwargs):
        loader = PriorityLoader()
        runtime = LocalRuntime(loader, threads=1, memory_budget_bytes=1000, idle_unload_s=None, **kwargs)
        await runtime.cache.get("a")
        await runtime.aclose()
        return loader.seen[0][0]

    assert asyncio.run(main()) == min(19, base + 10)
    assert asyncio.run(main(load_nice=0)) == base
