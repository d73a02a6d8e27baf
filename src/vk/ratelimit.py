"""A request-rate limiter shared through Redis by every process that uses the same VK token.

VK limits requests per token, not per process, so the budget lives in Redis: a sorted set of
the grant times of recent requests (a sliding-window log), checked and appended by one Lua
script so that concurrent processes never both take the last slot. Times come from Redis'
own clock (`TIME`), so the hosts' clocks need not agree. The key is a SHA-256 hash of the token,
never the token.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import uuid
from typing import Protocol

from pydantic import SecretStr
from redis.asyncio import Redis

from src.vk.config import VKSettings

KEY_PREFIX = "vkp:vk:rate:"

# KEYS[1]: the log. ARGV: window (µs), limit, a unique member.
# Returns 0 when a slot was taken, else the µs until the oldest grant leaves the window.
ACQUIRE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = tonumber(oldest[2]) + window - now
if wait < 1 then wait = 1 end
return wait
"""


class RateLimiter(Protocol):
    """What the client needs of a limiter."""

    async def acquire(self) -> None:
        """Wait until a request may be sent, and take that slot."""
        ...

    async def try_acquire(self) -> float:
        """Take a slot and return 0, or take nothing and return the seconds to wait."""
        ...


def rate_key(token: SecretStr | str | None) -> str:
    """The Redis key of a token's budget: a hash of the token, never the token."""
    if token is None:
        return KEY_PREFIX + "anonymous"
    secret = token.get_secret_value() if isinstance(token, SecretStr) else token
    return KEY_PREFIX + hashlib.sha256(secret.encode()).hexdigest()


class RedisRateLimiter:
    """At most `requests_per_second` grants per rolling second for one token, across processes.

    A fractional rate below 1/s allows one request per `1 / rate` seconds; above 1/s the rate is
    rounded down (2.5/s allows 2 per second), so the limit is never exceeded.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        token: SecretStr | str | None,
        requests_per_second: float,
        window_slack: float = 0.0,
    ) -> None:
        if requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive")
        if window_slack < 0:
            raise ValueError("window_slack must not be negative")
        self.redis = redis
        self.key = rate_key(token)
        if requests_per_second >= 1:
            self.limit = math.floor(requests_per_second)
            self.window = 1.0
        else:
            self.limit = 1
            self.window = 1.0 / requests_per_second
        self.window += window_slack
        self._window_us = math.ceil(self.window * 1_000_000)
        self._script = redis.register_script(ACQUIRE_SCRIPT)

    @classmethod
    def from_settings(cls, redis: Redis, settings: VKSettings) -> RedisRateLimiter:
        """The limiter for `settings.token` at `settings.requests_per_second`."""
        return cls(
            redis,
            token=settings.token,
            requests_per_second=settings.requests_per_second,
            window_slack=settings.rate_window_slack,
        )

    def __repr__(self) -> str:
        return f"RedisRateLimiter(limit={self.limit}, window={self.window:g}s)"

    async def try_acquire(self) -> float:
        """Take a slot and return 0, or take nothing and return the seconds until one frees."""
        wait_us = await self._script(
            keys=[self.key], args=[self._window_us, self.limit, uuid.uuid4().hex]
        )
        return int(wait_us) / 1_000_000

    async def acquire(self) -> None:
        """Wait until a slot is free and take it."""
        while True:
            wait = await self.try_acquire()
            if wait == 0:
                return
            # A little jitter so that waiters sharing the budget do not all retry at once.
            await asyncio.sleep(wait + random.uniform(0, 0.01))


class NoRateLimit:
    """A limiter that never waits (a token with its own budget elsewhere, or tests)."""

    async def acquire(self) -> None:
        return None

    async def try_acquire(self) -> float:
        return 0.0
