"""Who pays for an inference request: its tokens against the key's tokens/min limit, and its usage.

The estimate (tokens.py) is charged before the model runs, so a key over its limit never
reaches the model; once the model has counted the real tokens the difference is charged (or
refunded), so the limiter ends up holding exactly what the model read.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiaas.core.errors import RateLimited
from aiaas.security.ratelimit import Decision, Limits, RateLimiter
from aiaas.services.quotas import NO_RETRY


@dataclass(slots=True)
class Caller:
    """The authenticated caller, as inference needs it."""

    org_id: str
    key_id: str
    token_limits: Limits | None  # None: no tokens/min limit
    headers: dict[str, str]  # x-ratelimit-* headers for the answer; charges update them (copy_rate_headers)


def refusal(decision: Decision) -> RateLimited:
    err = decision.to_error()
    if decision.oversized:
        err.headers.update(NO_RETRY)  # waiting will not help; the request must get smaller
    return err


async def precharge(limiter: RateLimiter, caller: Caller, tokens: int) -> None:
    """Charge the estimate; over the limit, raise the 429 (with Retry-After)."""
    if caller.token_limits is None:
        return
    decision = await limiter.check(f"t:{caller.key_id}", caller.token_limits, tokens=tokens)
    decision.copy_rate_headers(caller.headers)
    if not decision.allowed:
        raise refusal(decision)


async def settle(limiter: RateLimiter, caller: Caller, estimated: int, real: int) -> None:
    """The model read `real` tokens where `estimated` were charged: charge or refund the difference."""
    if caller.token_limits is None or real == estimated:
        return
    decision = await limiter.adjust(f"t:{caller.key_id}", caller.token_limits, tokens=real - estimated)
    decision.copy_rate_headers(caller.headers)
