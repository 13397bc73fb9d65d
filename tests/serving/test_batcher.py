"""MicroBatcher without HTTP: ordering, counts, failures, light-load immediacy, length-matched
batches pulled by workers under load, fairness on a shared executor, close and cancel."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from aiaas.core.errors import AiaasError, Unavailable
from aiaas.serving.batcher import MicroBatcher, text_length


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


def exploding(calls: list, answer=lambda items: items):
    """fn for the batcher: records each batch and raises for one holding "boom"."""

    def fn(items):
        calls.append(list(items))
        if "boom" in items:
            raise RuntimeError("model exploded")
        return answer(items)

    return fn


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
    with pytest.raises(TypeError, match="executor"):
        MicroBatcher(list, executor=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrency"):
        MicroBatcher(list, max_concurrency=0)
    with pytest.raises(ValueError, match="batches_per_turn"):
        MicroBatcher(list, batches_per_turn=0)
    with pytest.raises(TypeError, match="length"):
        MicroBatcher(list, length=3)  # type: ignore[arg-type]


def test_light_load_runs_at_once_off_the_loop():
    async def main():
        rec = Recorder()
        batcher = MicroBatcher(rec, max_batch_size=32)
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
        batcher = MicroBatcher(rec, max_batch_size=8)
        rec.gate.clear()
        first = asyncio.ensure_future(batcher.submit(["a"]))
        await _wait_started(rec)  # "a" occupies the only worker
        others = [asyncio.ensure_future(batcher.submit([f"{i}x", f"{i}y"])) for i in range(5)]
        await asyncio.sleep(0.01)
        assert batcher.stats()["queued_items"] == 10
        rec.gate.set()
        results = await asyncio.gather(first, *others)
        # Read after close(), which waits for the workers: a worker thread leaves a moment after it hands its
        # last results to the loop, so a read right after gather() could still count it (a flake once).
        await batcher.close()
        return rec, results, batcher.stats()

    rec, results, stats = asyncio.run(main())
    assert results[0] == ["a" * 10]
    for i, got in enumerate(results[1:]):
        assert got == [f"{i}x" * 10, f"{i}y" * 10]
    # 10 waiting items, at most 8 per batch, in arrival order without a length function.
    assert rec.batches == [["a"], ["0x", "0y", "1x", "1y", "2x", "2y", "3x", "3y"], ["4x", "4y"]]
    assert stats["batches"] == 3 and stats["items"] == 11 and stats["largest_batch"] == 8
    assert stats["workers"] == 0 and stats["running_batches"] == 0


def test_large_request_is_split_into_batches_and_reassembled_in_order():
    async def main():
        rec = Recorder()
        batcher = MicroBatcher(rec, max_batch_size=2)
        out = await batcher.submit(list(range(5)))
        await batcher.close()
        return rec, out

    rec, out = asyncio.run(main())
    assert out == [0, 10, 20, 30, 40]
    assert sorted(len(b) for b in rec.batches) == [1, 2, 2]
    assert sorted(x for b in rec.batches for x in b) == [0, 1, 2, 3, 4]


def test_batches_group_similar_lengths_oldest_first():
    async def main():
        rec = Recorder(transform=str.upper)
        batcher = MicroBatcher(rec, max_batch_size=2, length=len)
        rec.gate.clear()
        held = asyncio.ensure_future(batcher.submit(["x"]))
        await _wait_started(rec)
        waiting = [asyncio.ensure_future(batcher.submit([t])) for t in ("a" * 8, "b", "cc", "d" * 7)]
        await asyncio.sleep(0.01)
        rec.gate.set()
        results = await asyncio.gather(held, *waiting)
        await batcher.close()
        return rec, results

    rec, results = asyncio.run(main())
    assert results == [["X"], ["A" * 8], ["B"], ["CC"], ["D" * 7]]
    # The oldest waiting text (8 chars) goes with its nearest in length (7), then the short pair.
    assert rec.batches == [["x"], ["a" * 8, "d" * 7], ["b", "cc"]]


def test_a_request_is_answered_when_its_own_batch_is_done():
    """No waiting for the rest of the queue: r1's batch answers while r2's is still running."""

    async def main():
        release = threading.Event()

        def fn(items):
            if "r" in items:
                assert release.wait(5)
            return [x.upper() for x in items]

        batcher = MicroBatcher(fn, max_batch_size=2)
        r1 = asyncio.ensure_future(batcher.submit(["p", "q"]))
        r2 = asyncio.ensure_future(batcher.submit(["r", "s"]))
        assert await asyncio.wait_for(r1, 5) == ["P", "Q"]
        assert not r2.done()
        release.set()
        assert await r2 == ["R", "S"]
        await batcher.close()

    asyncio.run(main())


def test_workers_run_batches_in_parallel():
    async def main():
        both_running = threading.Barrier(2, timeout=5)

        def fn(items):
            both_running.wait()  # passes only if two batches run at the same time
            return [x * 2 for x in items]

        pool = ThreadPoolExecutor(max_workers=2)
        batcher = MicroBatcher(fn, max_batch_size=2, executor=pool, max_concurrency=2)
        out = await batcher.submit([1, 2, 3, 4])
        await batcher.close()
        pool.shutdown()
        return out

    assert asyncio.run(main()) == [2, 4, 6, 8]


def test_shared_executor_takes_turns_between_batchers():
    """One thread, two models: after each turn a busy batcher hands the thread back."""
    order: list[str] = []
    gate = threading.Event()

    def model(name):
        def fn(items):
            if items == ["a0"]:
                assert gate.wait(5)
            order.extend(items)
            return items

        return fn

    async def main():
        pool = ThreadPoolExecutor(max_workers=1)
        a = MicroBatcher(model("a"), max_batch_size=1, executor=pool, batches_per_turn=1)
        b = MicroBatcher(model("b"), max_batch_size=1, executor=pool, batches_per_turn=1)
        first = asyncio.ensure_future(a.submit(["a0"]))
        await asyncio.sleep(0.02)
        rest = asyncio.ensure_future(a.submit(["a1", "a2", "a3"]))
        other = asyncio.ensure_future(b.submit(["b0"]))
        await asyncio.sleep(0.01)
        gate.set()
        assert await first == ["a0"] and await rest == ["a1", "a2", "a3"] and await other == ["b0"]
        await a.close()
        await b.close()
        pool.shutdown()

    asyncio.run(main())
    assert order[:2] == ["a0", "b0"], order  # b did not wait for all of a's queue
    assert order[2:] == ["a1", "a2", "a3"]


def test_exception_reaches_every_caller_in_the_batch_and_batcher_recovers():
    calls: list = []
    fn = exploding(calls, lambda items: [x.upper() for x in items])

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


def test_failed_batch_fails_its_whole_request_and_drops_the_rest_of_it():
    calls: list = []
    fn = exploding(calls)

    async def main():
        batcher = MicroBatcher(fn, max_batch_size=2)
        with pytest.raises(RuntimeError, match="exploded"):
            await batcher.submit(["boom", "a", "b", "c"])
        assert await batcher.submit(["next"]) == ["next"]
        await batcher.close()

    asyncio.run(main())
    assert calls == [["boom", "a"], ["next"]]  # b and c never ran for a request already failed


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
        assert not closing.done()  # it waits for the running batch
        rec.gate.set()  # the running batch still finishes and answers
        await closing
        assert await running == ["running" * 10]
        with pytest.raises(Unavailable, match="shutting down"):
            await queued
        with pytest.raises(Unavailable):
            await batcher.submit(["late"])
        return rec

    assert asyncio.run(main()).batches == [["running"]]


def test_shut_down_executor_fails_requests_clearly():
    async def main():
        pool = ThreadPoolExecutor(max_workers=1)
        pool.shutdown()
        batcher = MicroBatcher(lambda items: items, executor=pool)
        with pytest.raises(Unavailable, match="shutting down"):
            await asyncio.wait_for(batcher.submit(["x"]), 5)
        assert batcher.stats()["workers"] == 0

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
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        rec.gate.set()
        assert await first == [10] and await kept == [30]
        await batcher.close()
        return rec

    rec = asyncio.run(main())
    assert rec.batches == [[1], [3]]


def test_text_length_leaves_bad_items_to_the_batch_function():
    def fn(items):
        bad = [i for i, x in enumerate(items) if not isinstance(x, str)]
        if bad:
            raise TypeError(f"item {bad[0]} is not a string")
        return items

    async def main():
        batcher = MicroBatcher(fn, length=text_length)
        with pytest.raises(TypeError, match="item 1 is not a string"):
            await batcher.submit(["fine", 3])
        assert await batcher.submit(["abc", "de"]) == ["abc", "de"]
        await batcher.close()

    assert text_length("four") == 4 and text_length(None) == 0
    asyncio.run(main())
