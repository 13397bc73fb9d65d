"""Rate limits: one behavioural suite run against memory and, when configured, real Redis.

Set AIAAS_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/15) to run the Redis half. Each
Redis test uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable

import pytest

from aiaas.core.errors import ConfigurationError, RateLimited
from aiaas.security.ratelimit import (
    Decision,
    Limits,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    create_rate_limiter,
    format_duration,
)

REDIS_URL = os.environ.get("AIAAS_TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="set AIAAS_TEST_REDIS_URL to test the Redis limiter")


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Scenario = Callable[[RateLimiter, RateLimiter, FakeClock], Awaitable[None]]


def run_scenario(backend: str, scenario: Scenario) -> None:
    """Run `scenario(limiter, twin, clock)`; `twin` shares state like a second API process."""

    async def main() -> None:
        clock = FakeClock()
        if backend == "memory":
            limiter = MemoryRateLimiter(clock=clock)
            await scenario(limiter, limiter, clock)
            return
        import redis.asyncio as redis_asyncio

        assert REDIS_URL
        prefix = f"aiaas-test:{uuid.uuid4().hex}:"
        client_a = redis_asyncio.Redis.from_url(REDIS_URL)
        client_b = redis_asyncio.Redis.from_url(REDIS_URL)
        try:
            a = RedisRateLimiter(REDIS_URL, prefix=prefix, clock=clock, client=client_a)
            b = RedisRateLimiter(REDIS_URL, prefix=prefix, clock=clock, client=client_b)
            await scenario(a, b, clock)
        finally:
            keys = [k async for k in client_a.scan_iter(match=prefix + "*")]
            if keys:
                await client_a.delete(*keys)
            await client_a.aclose()
            await client_b.aclose()

    asyncio.run(main())


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# ---- behaviour, on every backend ----------------------------------------------------------


def test_burst_then_refusal_then_refill(backend: str) -> None:
    async def scenario(limiter: RateLimiter, _: RateLimiter, clock: FakeClock) -> None:
        limits = Limits(requests_per_minute=3, tokens_per_minute=None)
        remaining = []
        for _ in range(3):
            d = await limiter.check("k", limits)
            assert d.allowed and "Retry-After" not in d.headers
            remaining.append(d.headers["x-ratelimit-remaining-requests"])
        assert remaining == ["2", "1", "0"]
        refused = await limiter.check("k", limits)
        assert not refused.allowed and refused.exceeded == "requests"
        assert refused.retry_after_s == pytest.approx(20.0)
        assert refused.headers["Retry-After"] == "20"
        assert refused.headers["x-ratelimit-limit-requests"] == "3"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert refused.headers["x-ratelimit-reset-requests"] == "1m0s"
        clock.advance(19.0)
        assert not (await limiter.check("k", limits)).allowed
        clock.advance(1.0)
        assert (await limiter.check("k", limits)).allowed

    run_scenario(backend, scenario)


def test_steady_rate_after_the_burst(backend: str) -> None:
    async def scenario(limiter: RateLimiter, _: RateLimiter, clock: FakeClock) -> None:
        limits = Limits(requests_per_minute=60, tokens_per_minute=None)
        assert all([(await limiter.check("k", limits)).allowed for _ in range(60)])
        allowed = 0
        for _ in range(30):  # 30 s at 4 tries a second: one per second gets through
            for _ in range(4):
                allowed += (await limiter.check("k", limits)).allowed
            clock.advance(1.0)
        assert allowed in (29, 30)

    run_scenario(backend, scenario)


def test_tokens_are_charged_and_refusals_cost_nothing(backend: str) -> None:
    async def scenario(limiter: RateLimiter, _: RateLimiter, clock: FakeClock) -> None:
        limits = Limits(requests_per_minute=None, tokens_per_minute=1000)
        first = await limiter.check("k", limits, tokens=600)
        assert first.allowed and first.headers["x-ratelimit-remaining-tokens"] == "400"
        assert first.headers["x-ratelimit-reset-tokens"] == "36s"
        assert "x-ratelimit-limit-requests" not in first.headers
        refused = await limiter.check("k", limits, tokens=600)
        assert not refused.allowed and refused.exceeded == "tokens"
        assert refused.retry_after_s == pytest.approx(12.0)  # 200 tokens at 1000/min
        assert refused.headers["Retry-After"] == "12"
        fits = await limiter.check("k", limits, tokens=400)  # the refusal charged nothing
        assert fits.allowed and fits.headers["x-ratelimit-remaining-tokens"] == "0"

    run_scenario(backend, scenario)


def test_both_dimensions_and_all_headers(backend: str) -> None:
    async def scenario(limiter: RateLimiter, _: RateLimiter, clock: FakeClock) -> None:
        limits = Limits(requests_per_minute=10, tokens_per_minute=100)
        ok = await limiter.check("k", limits, tokens=90)
        assert ok.allowed
        assert ok.headers == {
            "x-ratelimit-limit-requests": "10",
            "x-ratelimit-remaining-requests": "9",
            "x-ratelimit-reset-requests": "6s",
            "x-ratelimit-limit-tokens": "100",
            "x-ratelimit-remaining-tokens": "10",
            "x-ratelimit-reset-tokens": "54s",
        }
        refused = await limiter.check("k", limits, tokens=20)
        assert not refused.allowed and refused.exceeded == "tokens"
        assert refused.headers["x-ratelimit-remaining-requests"] == "9"  # not charged
        assert (await limiter.check("k", limits, tokens=10)).allowed

    run_scenario(backend, scenario)


def test_keys_are_independent(backend: str) -> None:
    async def scenario(limiter: RateLimiter, _: RateLimiter, clock: FakeClock) -> None:
        limits = Limits(requests_per_minute=1, tokens_per_minute=None)
        assert (await limiter.check("a", limits)).allowed
        assert not (await limiter.check("a", limits)).allowed
        assert (await limiter.check("b", limits)).allowed

    run_scenario(backend, scenario)


def test_an_answer_gets_the_rate_headers_and_only_them(backend: str) -> None:
    """copy_rate_headers (the one helper that routes and the inference service use): every
    x-ratelimit-* header of a decision, allowed, adjusted or refused, and never its Retry-After."""
    async def scenario(limiter: RateLimiter, _: RateLimiter, clock: FakeClock) -> None:
        limits = Limits(requests_per_minute=1, tokens_per_minute=50)
        decisions = [await limiter.check("k", limits, tokens=10),
                     await limiter.adjust("k", limits, tokens=-5),
                     await limiter.check("k", limits, tokens=10)]
        assert [d.allowed for d in decisions] == [True, True, False]
        assert "Retry-After" in decisions[2].headers
        for d in decisions:
            into = {"kept": "yes"}
            d.copy_rate_headers(into)
            want = {k: v for k, v in d.headers.items() if k.startswith("x-ratelimit-")}
            assert len(want) >= 3 and into == {"kept": "yes", **want}

    run_scenario(backend, scenario)


def test_unlimited_and_oversized(backend: str) -> None:
    async def scenario(limiter: RateLimiter, _: RateLimiter, clock: FakeClock) -> None:
        free = await limiter.check("k", Limits(None, None), tokens=10**9)
        assert free == Decision(True, 0.0, {})
        limits = Limits(requests_per_minute=5, tokens_per_minute=100)
        big = await limiter.check("k", limits, tokens=101)
        assert not big.allowed and big.oversized and "Retry-After" not in big.headers
        assert "tokens-per-minute" in big.to_error().message
        after = await limiter.check("k", limits, tokens=100)  # the oversized one charged nothing
        assert after.allowed and after.headers["x-ratelimit-remaining-requests"] == "4"

    run_scenario(backend, scenario)


def test_lowered_limit_takes_effect_at_once(backend: str) -> None:
    async def scenario(limiter: RateLimiter, _: RateLimiter, clock: FakeClock) -> None:
        assert (await limiter.check("k", Limits(requests_per_minute=100))).allowed
        d = await limiter.check("k", Limits(requests_per_minute=2))
        assert d.allowed and d.headers["x-ratelimit-remaining-requests"] == "1"

    run_scenario(backend, scenario)


def test_concurrent_checks_from_two_processes_never_overshoot(backend: str) -> None:
    async def scenario(limiter: RateLimiter, twin: RateLimiter, clock: FakeClock) -> None:
        limits = Limits(requests_per_minute=25, tokens_per_minute=None)
        results = await asyncio.gather(
            *[(limiter if i % 2 else twin).check("shared", limits) for i in range(60)]
        )
        assert sum(d.allowed for d in results) == 25

    run_scenario(backend, scenario)


# ---- Redis-only ----------------------------------------------------------------------------


@needs_redis
def test_redis_server_clock_and_expiry() -> None:
    async def main() -> None:
        import redis.asyncio as redis_asyncio

        assert REDIS_URL
        prefix = f"aiaas-test:{uuid.uuid4().hex}:"
        client = redis_asyncio.Redis.from_url(REDIS_URL)
        limiter = RedisRateLimiter(REDIS_URL, prefix=prefix, client=client)  # time from Redis
        try:
            limits = Limits(requests_per_minute=2, tokens_per_minute=50)
            assert (await limiter.check("k", limits, tokens=1)).allowed
            assert (await limiter.check("k", limits, tokens=1)).allowed
            refused = await limiter.check("k", limits, tokens=1)
            assert not refused.allowed and 29 <= refused.retry_after_s <= 30
            ttl = await client.pttl(prefix + "k")
            assert 0 < ttl <= 61_000  # the bucket is forgotten once it would be full again
        finally:
            await client.delete(prefix + "k")
            await client.aclose()

    asyncio.run(main())


# ---- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.0004, "1ms"), (0.02, "20ms"), (1, "1s"), (1.5, "1.5s"), (8.64, "8.64s"),
     (59.9999, "1m0s"), (60, "1m0s"), (360, "6m0s"), (61.5, "1m1.5s"), (3723, "1h2m3s")],
)  # fmt: skip
def test_format_duration_matches_openai(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_memory_limiter_forgets_idle_keys() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    limits = Limits(requests_per_minute=1)

    async def main() -> None:
        for i in range(MemoryRateLimiter._SWEEP_EVERY - 1):
            await limiter.check(f"key-{i}", limits)
        clock.advance(61)
        await limiter.check("last", limits)  # the sweep runs on this call

    asyncio.run(main())
    assert len(limiter._buckets) == 1


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        Limits(requests_per_minute=0)
    with pytest.raises(ValueError):
        asyncio.run(MemoryRateLimiter().check("k", Limits(requests_per_minute=1), tokens=-1))


def test_refusal_becomes_a_429_error_with_headers() -> None:
    async def main() -> Decision:
        limiter = MemoryRateLimiter(clock=FakeClock())
        await limiter.check("k", Limits(requests_per_minute=1))
        return await limiter.check("k", Limits(requests_per_minute=1))

    err = asyncio.run(main()).to_error()
    assert isinstance(err, RateLimited) and err.status == 429
    assert err.headers["Retry-After"] == "60" and "Retry after 60s" in err.message


def test_create_rate_limiter_by_url() -> None:
    assert isinstance(create_rate_limiter(None), MemoryRateLimiter)
    assert isinstance(create_rate_limiter("memory://"), MemoryRateLimiter)
    redis_limiter = create_rate_limiter("redis://127.0.0.1:1/0")  # connects lazily
    assert isinstance(redis_limiter, RedisRateLimiter)
    asyncio.run(redis_limiter.aclose())
    with pytest.raises(ConfigurationError):
        create_rate_limiter("memcached://x")
