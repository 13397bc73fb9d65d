"""Per-key rate limits: requests per minute and tokens per minute.

Each limit is a token bucket that holds up to `limit` units and refills at `limit`
per minute. A bucket allows short bursts up to the limit and then a steady rate, and
its state is two numbers, so it is cheap in memory and in one atomic Redis script.
A request passes only if every configured bucket can pay for it; a refused request
costs nothing, so clients that back off as told are not punished further.

Answers carry OpenAI-style headers (`x-ratelimit-limit-requests`,
`x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests` and the `-tokens`
trio, durations like "1s", "6m0s") so OpenAI clients back off correctly unchanged,
plus `Retry-After` in whole seconds when refused.

Backends: MemoryRateLimiter for one process, RedisRateLimiter when several API
processes must share limits. `create_rate_limiter(url)` picks one by URL scheme.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiaas.core.errors import ConfigurationError, RateLimited

logger = logging.getLogger(__name__)

WINDOW_S = 60.0  # limits are per minute
_EPS = 1e-9  # float slack so a bucket refilled to 0.9999999999 still pays for 1
RATE_LIMIT_PREFIX = "x-ratelimit-"  # the headers an answer carries, refused or not (_put_headers)


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits for one key; None means unlimited in that dimension."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be a positive integer or None (unlimited), not {value}.")


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one request.

    `exceeded` names the dimension that refused it ("requests" or "tokens").
    `oversized` means the request alone needs more tokens than the per-minute limit:
    waiting will never help, so no Retry-After is given.
    """

    allowed: bool
    retry_after_s: float
    headers: dict[str, str] = field(default_factory=dict)
    exceeded: str | None = None
    oversized: bool = False

    def to_error(self) -> RateLimited:
        """The 429 error to raise for a refused decision, headers included."""
        if self.oversized:
            message = "This request needs more tokens than your tokens-per-minute limit allows; send less."
        else:
            message = (
                f"Rate limit reached for {self.exceeded or 'requests'} per minute. "
                f"Retry after {self.headers.get('Retry-After', '1')}s."
            )
        return RateLimited(message, headers=dict(self.headers))

    def copy_rate_headers(self, into: dict[str, str]) -> None:
        """Put this decision's x-ratelimit-* headers (not a refusal's Retry-After) into an answer's."""
        if self.allowed:  # an allowed decision carries nothing else (_decide, _adjusted)
            into.update(self.headers)
        else:
            into.update({k: v for k, v in self.headers.items() if k.startswith(RATE_LIMIT_PREFIX)})


def format_duration(seconds: float) -> str:
    """OpenAI's duration style: "20ms", "1s", "1.5s", "6m0s", "1h2m3s"."""
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _refill(level: float | None, limit: int, elapsed: float) -> float:
    """Bucket level after `elapsed` seconds; a bucket never seen before starts full."""
    if level is None:
        return float(limit)
    return min(float(limit), level + max(0.0, elapsed) * limit / WINDOW_S)


def _put_headers(headers: dict[str, str], name: str, limit: int, after: float) -> None:
    """The x-ratelimit-{limit,remaining,reset}-`name` headers: the one place they are written."""
    headers[f"x-ratelimit-limit-{name}"] = str(limit)
    headers[f"x-ratelimit-remaining-{name}"] = str(max(0, math.floor(after + _EPS)))
    headers[f"x-ratelimit-reset-{name}"] = format_duration((limit - after) * WINDOW_S / limit)


def _adjusted(tpm: int, tok_level: float) -> Decision:
    headers: dict[str, str] = {}
    _put_headers(headers, "tokens", tpm, tok_level)
    return Decision(True, 0.0, headers)


def _decide(limits: Limits, tokens: int, req_level: float | None, tok_level: float | None) -> Decision:
    """Build the decision from bucket levels *before* paying (shared by both backends).

    Levels are None for dimensions without a limit.
    """
    rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
    waits: dict[str, float] = {}
    if rpm is not None and req_level is not None and req_level + _EPS < 1:
        waits["requests"] = (1 - req_level) * WINDOW_S / rpm
    oversized = tpm is not None and tokens > tpm
    if tpm is not None and tok_level is not None and tok_level + _EPS < tokens:
        waits["tokens"] = math.inf if oversized else (tokens - tok_level) * WINDOW_S / tpm
    allowed = not waits

    headers: dict[str, str] = {}
    for name, limit, level, cost in (("requests", rpm, req_level, 1), ("tokens", tpm, tok_level, tokens)):
        if limit is None or level is None:
            continue
        _put_headers(headers, name, limit, level - cost if allowed else level)
    if allowed:
        return Decision(True, 0.0, headers)

    exceeded = max(waits, key=lambda k: waits[k])
    if oversized:
        return Decision(False, 0.0, headers, exceeded="tokens", oversized=True)
    retry_after = max(waits.values())
    headers["Retry-After"] = str(max(1, math.ceil(retry_after - 1e-6)))
    return Decision(False, retry_after, headers, exceeded=exceeded)


class RateLimiter(ABC):
    """Checks and charges one request against a key's limits."""

    # True when check() finishes without I/O: callers then await several checks in turn
    # instead of paying for a task each (asyncio.gather) to overlap nothing.
    local = False

    @abstractmethod
    async def check(self, key: str, limits: Limits, *, tokens: int = 0) -> Decision:
        """Charge 1 request and `tokens` tokens to `key` if both fit, and say so.

        A refused request is not charged. `tokens` must be >= 0.
        """

    @abstractmethod
    async def adjust(self, key: str, limits: Limits, *, tokens: int) -> Decision:
        """Correct an earlier charge of `key`'s tokens by `tokens` (negative: a refund), never refusing.

        For a charge made on an estimate, once the real count is known. A refund never
        fills the bucket past its limit; a late charge may leave it below zero (the key then
        waits that much longer). The decision carries the tokens headers after the correction.
        """

    async def aclose(self) -> None:
        """Release connections (no-op for in-process limiters)."""


class MemoryRateLimiter(RateLimiter):
    """Token buckets in a dict: exact for one process, not shared between processes."""

    local = True
    _SWEEP_EVERY = 4096

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float | None, float | None, float]] = {}
        self._lock = threading.Lock()  # check() may also be called from worker threads
        self._calls = 0

    async def check(self, key: str, limits: Limits, *, tokens: int = 0) -> Decision:
        if tokens < 0:
            raise ValueError("tokens must be >= 0.")
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        if rpm is None and tpm is None:
            return Decision(True, 0.0, {})
        with self._lock:
            now = self._clock()
            req, tok, last = self._buckets.get(key, (None, None, now))
            elapsed = now - last
            req_level = _refill(req, rpm, elapsed) if rpm is not None else None
            tok_level = _refill(tok, tpm, elapsed) if tpm is not None else None
            decision = _decide(limits, tokens, req_level, tok_level)
            if decision.allowed:
                req_level = req_level - 1 if req_level is not None else None
                tok_level = tok_level - tokens if tok_level is not None else None
            self._buckets[key] = (req_level, tok_level, now)
            self._calls += 1
            if self._calls % self._SWEEP_EVERY == 0:
                self._sweep(now)
        return decision

    async def adjust(self, key: str, limits: Limits, *, tokens: int) -> Decision:
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        if tpm is None:
            return Decision(True, 0.0, {})
        with self._lock:
            now = self._clock()
            req, tok, last = self._buckets.get(key, (None, None, now))
            elapsed = now - last
            req_level = _refill(req, rpm, elapsed) if rpm is not None else None
            tok_level = min(float(tpm), _refill(tok, tpm, elapsed) - tokens)
            self._buckets[key] = (req_level, tok_level, now)
        return _adjusted(tpm, tok_level)

    def _sweep(self, now: float) -> None:
        """Forget buckets idle for a whole window: they are full again, same as unseen."""
        stale = [k for k, (_, _, ts) in self._buckets.items() if now - ts >= WINDOW_S]
        for k in stale:
            del self._buckets[k]


# One atomic read-refill-charge-write per check. Levels are returned *before* paying
# so Python builds the decision exactly as the memory backend does.
_LUA_CHECK = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'r', 't', 'ts')
local elapsed = math.max(0, now - (tonumber(state[3]) or now))
local function refill(level, limit)
  level = tonumber(level)
  if not level then return limit end
  return math.min(limit, level + elapsed * limit / window)
end
local r = -1
local t = -1
if rpm > 0 then r = refill(state[1], rpm) end
if tpm > 0 then t = refill(state[2], tpm) end
local ok = 1
if rpm > 0 and r + 1e-9 < 1 then ok = 0 end
if tpm > 0 and t + 1e-9 < cost then ok = 0 end
local r_after = r
local t_after = t
if ok == 1 then
  r_after = r - 1
  t_after = t - cost
end
redis.call('HSET', KEYS[1], 'ts', string.format('%.6f', now))
if rpm > 0 then redis.call('HSET', KEYS[1], 'r', string.format('%.9f', r_after))
else redis.call('HDEL', KEYS[1], 'r') end
if tpm > 0 then redis.call('HSET', KEYS[1], 't', string.format('%.9f', t_after))
else redis.call('HDEL', KEYS[1], 't') end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {string.format('%.9f', r), string.format('%.9f', t)}
"""


# Correct the tokens bucket by a signed amount: refill both buckets as _LUA_CHECK does, never refuse,
# never fill past the limit. Returns the tokens level after the correction.
_LUA_ADJUST = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local delta = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'r', 't', 'ts')
local elapsed = math.max(0, now - (tonumber(state[3]) or now))
local function refill(level, limit)
  level = tonumber(level)
  if not level then return limit end
  return math.min(limit, level + elapsed * limit / window)
end
local t = math.min(tpm, refill(state[2], tpm) - delta)
redis.call('HSET', KEYS[1], 'ts', string.format('%.6f', now), 't', string.format('%.9f', t))
if rpm > 0 then redis.call('HSET', KEYS[1], 'r', string.format('%.9f', refill(state[1], rpm))) end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return string.format('%.9f', t)
"""


def _import_redis() -> Any:
    try:
        import redis.asyncio as redis_asyncio
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "Redis rate limiting needs the redis client: pip install 'aiaas[redis]'."
        ) from exc
    return redis_asyncio


class RedisRateLimiter(RateLimiter):
    """Token buckets in Redis hashes, shared by every API process using the same Redis.

    Time comes from the Redis server (TIME) so processes with skewed clocks agree;
    tests may inject a clock instead. Buckets expire once they would be full again.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "aiaas:ratelimit:",
        clock: Callable[[], float] | None = None,
        client: Any = None,
    ) -> None:
        redis_asyncio = _import_redis()
        self._client = client if client is not None else redis_asyncio.Redis.from_url(url)
        self._owns_client = client is None
        self._script = self._client.register_script(_LUA_CHECK)
        self._adjust = self._client.register_script(_LUA_ADJUST)
        self._prefix = prefix
        self._clock = clock
        self._ttl_ms = str(int(WINDOW_S * 1000) + 1000)

    @property
    def prefix(self) -> str:
        return self._prefix

    async def check(self, key: str, limits: Limits, *, tokens: int = 0) -> Decision:
        if tokens < 0:
            raise ValueError("tokens must be >= 0.")
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        if rpm is None and tpm is None:
            return Decision(True, 0.0, {})
        now = "" if self._clock is None else repr(float(self._clock()))
        req, tok = await self._script(
            keys=[self._prefix + key],
            args=[now, rpm or 0, tpm or 0, tokens, repr(WINDOW_S), self._ttl_ms],
        )
        req_level = float(req) if rpm is not None else None
        tok_level = float(tok) if tpm is not None else None
        return _decide(limits, tokens, req_level, tok_level)

    async def adjust(self, key: str, limits: Limits, *, tokens: int) -> Decision:
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        if tpm is None:
            return Decision(True, 0.0, {})
        now = "" if self._clock is None else repr(float(self._clock()))
        level = await self._adjust(
            keys=[self._prefix + key], args=[now, rpm or 0, tpm, int(tokens), repr(WINDOW_S), self._ttl_ms]
        )
        return _adjusted(tpm, float(level))

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def create_rate_limiter(url: str | None) -> RateLimiter:
    """A limiter for a URL: None or "memory://" in-process, "redis://..." shared."""
    if not url or url == "memory://":
        return MemoryRateLimiter()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisRateLimiter(url)
    scheme = url.split("://", 1)[0]
    raise ConfigurationError(f"Unsupported rate limit backend {scheme!r}; use memory:// or redis://.")
