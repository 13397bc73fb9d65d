"""Charging an estimate and settling it on the real count, on both limiter backends."""

from __future__ import annotations

import uuid

import pytest

from aiaas.core.errors import RateLimited
from aiaas.security.ratelimit import Limits, MemoryRateLimiter, RedisRateLimiter
from aiaas.services.inference.metering import Caller, precharge, settle
from tests.conftest import REDIS_URL

LIMIT = 100


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.skipif(
    not REDIS_URL, reason="AIAAS_TEST_REDIS_URL is not set"))])
async def limiter(request):
    clock = Clock()
    if request.param == "memory":
        yield MemoryRateLimiter(clock=clock), clock
    else:
        redis_limiter = RedisRateLimiter(REDIS_URL, prefix=f"aiaas:test:{uuid.uuid4().hex}:", clock=clock)
        yield redis_limiter, clock
        await redis_limiter.aclose()


def caller() -> Caller:
    return Caller("org", "key", Limits(tokens_per_minute=LIMIT), {})


def remaining(c: Caller) -> int:
    return int(c.headers["x-ratelimit-remaining-tokens"])


async def test_settle_charges_the_difference_or_refunds_it(limiter):
    lim, _ = limiter
    c = caller()
    await precharge(lim, c, 10)
    assert remaining(c) == 90
    await settle(lim, c, estimated=10, real=25)  # the model read more: charged the rest
    assert remaining(c) == 75
    await precharge(lim, c, 30)
    await settle(lim, c, estimated=30, real=5)  # less: refunded
    assert remaining(c) == 70
    # The headers say what the limiter holds: the next check sees the same level.
    probe = await lim.check("t:key", Limits(tokens_per_minute=LIMIT), tokens=0)
    assert probe.headers["x-ratelimit-remaining-tokens"] == "70"


async def test_a_late_charge_can_overdraw_and_a_refund_never_overfills(limiter):
    lim, clock = limiter
    c = caller()
    await precharge(lim, c, 90)
    await settle(lim, c, estimated=90, real=130)  # 30 below zero: the key waits that long
    assert remaining(c) == 0 and c.headers["x-ratelimit-reset-tokens"] == "1m18s"
    with pytest.raises(RateLimited):
        await precharge(lim, c, 1)
    clock.now += 60  # a full minute refills 100: from -30 to 70
    await precharge(lim, c, 0)
    assert remaining(c) == 70
    await settle(lim, c, estimated=500, real=0)  # a refund larger than the hole stops at the limit
    assert remaining(c) == LIMIT


async def test_nothing_to_do_without_a_tokens_limit(limiter):
    lim, _ = limiter
    c = Caller("org", "key", None, {})
    await precharge(lim, c, 10**9)
    await settle(lim, c, estimated=10**9, real=1)
    assert c.headers == {}
