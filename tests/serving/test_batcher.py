"""MicroBatcher without HTTP: ordering, counts, failures, light-load immediacy, merging under load."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from aiaas.core.errors import AiaasError, Unavailable
from aiaas.serving.batcher import MicroBatcher


class Recorder:
    """fn for the batcher: records every batch and the thread it ran on; can be held on a gate."""

    def __init__(self, transform=lambda x: x * 10) -> None:
        self.batches: list[list] = []
        self.threads: set[int] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.transform = transform

    def __call__(self, items: list) -> list:
        self.threads.add(threading.get_ident())
        self.batches.append(list(items))
        self.started.set()
        assert self.gate.wait(5), "test gate never opened"
        return [self.transform(x) for x in items]


async def _wait_started(recorder: Recorder) -> None:
    while not recorder.started.is_set():
        await asyncio.sleep(0.001)


def test_constructor_validates_arguments():
    with pytest.raises(TypeError, match="callable"):
        MicroBatcher(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(list, max_batch_size=0)
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(list, max_batch_size=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_wait_ms"):
        MicroBatcher(list, max_wait_ms=-1)
    with pytest.raises(ValueError, match="max_wait_ms"):
        MicroBatcher(list, max_wait_ms=float("nan"))
    with pytest.raises(TypeError, match="executor"):
        MicroBatcher(list, executor=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrency"):
        MicroBatcher(list, max_concurrency=0)


def test_light_load_runs_at_once_off_the_loop():
    async def main():
        rec = Recorder()
        # A long max_wait proves an idle batcher does not wait for company.
        batcher = MicroBatcher(rec, max_batch_size=32, max_wait_ms=10_000)
        t0 = time.perf_counter()
        assert await batcher.submit([1, 2, 3]) == [10, 20, 30]
        assert time.perf_counter() - t0 < 1.0
        assert await batcher.submit([]) == []
        await batcher.close()
        return rec

    rec = asyncio.run(main())
    assert rec.batches == [[1, 2, 3]]
    assert threading.get_ident() not in rec.threads


def test_requests_queued_under_load_merge_and_keep_their_order():
    async def main():
        rec = Recorder()
        batcher = MicroBatcher(rec, max_batch_size=8, max_wait_ms=1)
        rec.gate.clear()
        first = asyncio.ensure_future(batcher.submit(["a"]))
        await _wait_started(rec)  # "a" occupies the only slot
        others = [asyncio.ensure_future(batcher.submit([f"{i}x", f"{i}y"])) for i in range(5)]
        await asyncio.sleep(0.01)
        assert batcher.stats()["queued_items"] == 10
        rec.gate.set()
        results = await asyncio.gather(first, *others)
        stats = batcher.stats()
        await batcher.close()
        return rec, results, stats

    rec, results, stats = asyncio.run(main())
    assert results[0] == ["a" * 10]
    for i, got in enumerate(results[1:]):
        assert got == [f"{i}x" * 10, f"{i}y" * 10]
    # 10 queued items, max 8 per batch, requests kept whole: 4 requests (8 items) then 1.
    assert rec.batches == [["a"], ["0x", "0y", "1x", "1y", "2x", "2y", "3x", "3y"], ["4x", "4y"]]
    assert stats["batches"] == 3 and stats["items"] == 11 and stats["largest_batch"] == 8


def test_oversized_request_runs_as_its_own_batch():
    async def main():
        rec = Recorder()
        batcher = MicroBatcher(rec, max_batch_size=2)
        out = await batcher.submit(list(range(5)))
        await batcher.close()
        return rec, out

    rec, out = asyncio.run(main())
    assert out == [0, 10, 20, 30, 40]
    assert rec.batches == [[0, 1, 2, 3, 4]]


def test_exception_reaches_every_caller_in_the_batch_and_batcher_recovers():
    calls = []

    def fn(items):
        calls.append(list(items))
        if "boom" in items:
            raise RuntimeError("model exploded")
        return [x.upper() for x in items]

    async def main():
        gate = threading.Event()

        def slow_first(items):
            if items == ["hold"]:
                gate.wait(5)
            return fn(items)

        batcher = MicroBatcher(slow_first, max_batch_size=16)
        holder = asyncio.ensure_future(batcher.submit(["hold"]))
        await asyncio.sleep(0.02)
        victims = [asyncio.ensure_future(batcher.submit(x)) for x in (["ok"], ["boom"], ["fine", "too"])]
        await asyncio.sleep(0.01)
        gate.set()
        assert await holder == ["HOLD"]
        outcomes = await asyncio.gather(*victims, return_exceptions=True)
        after = await batcher.submit(["later"])
        await batcher.close()
        return outcomes, after

    outcomes, after = asyncio.run(main())
    assert all(isinstance(o, RuntimeError) and "model exploded" in str(o) for o in outcomes)
    assert calls[1] == ["ok", "boom", "fine", "too"]  # they really shared one batch
    assert after == ["LATER"]


def test_output_count_mismatch_fails_every_caller():
    async def main():
        batcher = MicroBatcher(lambda items: items[:-1], max_batch_size=4)
        with pytest.raises(AiaasError, match="returned 2 results for 3 inputs") as err:
            await batcher.submit([1, 2, 3])
        assert err.value.code == "internal_error"
        bad_type = MicroBatcher(lambda items: None)
        with pytest.raises(AiaasError, match="non-sequence"):
            await bad_type.submit([1])
        await batcher.close()
        await bad_type.close()

    asyncio.run(main())


def test_spare_slot_waits_up_to_max_wait_to_fill_a_batch():
    """With 2 slots and one busy, a lone newcomer waits max_wait_ms for company, then runs."""

    async def main():
        rec = Recorder()
        blocker = threading.Event()

        def gate_first(items):
            if items == ["slow"]:
                blocker.wait(5)
            return rec(items)

        pool = ThreadPoolExecutor(max_workers=2)
        batcher = MicroBatcher(gate_first, max_batch_size=4, max_wait_ms=50, executor=pool, max_concurrency=2)
        slow = asyncio.ensure_future(batcher.submit(["slow"]))
        await asyncio.sleep(0.02)
        t0 = time.perf_counter()
        a = asyncio.ensure_future(batcher.submit(["a"]))
        b = asyncio.ensure_future(batcher.submit(["b"]))
        assert await a == ["a" * 10] and await b == ["b" * 10]
        waited = time.perf_counter() - t0
        blocker.set()
        await slow
        await batcher.close()
        pool.shutdown()
        return rec, waited

    rec, waited = asyncio.run(main())
    assert ["a", "b"] in rec.batches  # merged, not one slot each
    assert 0.03 <= waited < 2.0


def test_close_fails_queued_requests_and_refuses_new_ones():
    async def main():
        rec = Recorder()
        batcher = MicroBatcher(rec, max_batch_size=4)
        rec.gate.clear()
        running = asyncio.ensure_future(batcher.submit(["running"]))
        await _wait_started(rec)
        queued = asyncio.ensure_future(batcher.submit(["queued"]))
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0.01)
        rec.gate.set()  # the running batch still finishes and answers
        await closing
        assert await running == ["running" * 10]
        with pytest.raises(Unavailable, match="shutting down"):
            await queued
        with pytest.raises(Unavailable):
            await batcher.submit(["late"])

    asyncio.run(main())


def test_cancelled_caller_is_skipped():
    async def main():
        rec = Recorder()
        batcher = MicroBatcher(rec, max_batch_size=8)
        rec.gate.clear()
        first = asyncio.ensure_future(batcher.submit([1]))
        await _wait_started(rec)
        gone = asyncio.ensure_future(batcher.submit([2]))
        kept = asyncio.ensure_future(batcher.submit([3]))
        await asyncio.sleep(0)
        gone.cancel()
        rec.gate.set()
        assert await first == [10] and await kept == [30]
        await batcher.close()
        return rec

    rec = asyncio.run(main())
    assert rec.batches == [[1], [3]]
