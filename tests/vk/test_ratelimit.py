"""The Redis-shared rate limiter, on the run's real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from src.vk.ratelimit import KEY_PREFIX, RedisRateLimiter, rate_key

TOKEN = "limiter-test-token-abc123"


def max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best = start = 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_try_acquire_grants_up_to_the_limit_then_says_how_long(aredis: Redis) -> None:
    limiter = RedisRateLimiter(aredis, token=TOKEN, requests_per_second=3)
    assert [await limiter.try_acquire() for _ in range(3)] == [0, 0, 0]
    wait = await limiter.try_acquire()
    assert 0.9 < wait <= 1.0
    # A refused try takes nothing: the wait only shrinks.
    assert await limiter.try_acquire() <= wait
    await asyncio.sleep(wait)
    assert await limiter.try_acquire() == 0


async def test_key_is_a_hash_of_the_token(aredis: Redis) -> None:
    limiter = RedisRateLimiter(aredis, token=SecretStr(TOKEN), requests_per_second=3)
    await limiter.acquire()
    keys = [key.decode() for key in await aredis.keys("*") if key.decode().startswith(KEY_PREFIX)]
    assert keys == [KEY_PREFIX + hashlib.sha256(TOKEN.encode()).hexdigest()]
    assert TOKEN not in keys[0] and TOKEN not in repr(limiter)
    assert rate_key(TOKEN) == rate_key(SecretStr(TOKEN)) != rate_key("other")
    assert 0 < await aredis.pttl(keys[0]) <= 2000


async def test_tokens_have_separate_budgets(aredis: Redis) -> None:
    one = RedisRateLimiter(aredis, token="token-one", requests_per_second=1)
    two = RedisRateLimiter(aredis, token="token-two", requests_per_second=1)
    assert await one.try_acquire() == 0
    assert await two.try_acquire() == 0
    assert await one.try_acquire() > 0


async def test_processes_share_one_budget(aredis: Redis, redis_url: str) -> None:
    """Two limiters on separate connections (as two processes would be) share 5/s."""
    other = Redis.from_url(redis_url)
    try:
        limiters = [
            RedisRateLimiter(redis, token=TOKEN, requests_per_second=5) for redis in (aredis, other)
        ]
        granted: list[float] = []

        async def take(limiter: RedisRateLimiter) -> None:
            await limiter.acquire()
            granted.append(time.monotonic())

        started = time.monotonic()
        await asyncio.gather(*[take(limiter) for limiter in limiters for _ in range(7)])
        elapsed = time.monotonic() - started
    finally:
        await other.aclose()
    assert len(granted) == 14
    assert max_in_window(granted) <= 5
    assert 1.9 < elapsed < 4


async def test_rate_below_one_per_second(aredis: Redis) -> None:
    limiter = RedisRateLimiter(aredis, token=TOKEN, requests_per_second=0.5)
    assert (limiter.limit, limiter.window) == (1, 2.0)
    assert await limiter.try_acquire() == 0
    assert 1.9 < await limiter.try_acquire() <= 2.0


def test_fractional_rates_round_down_and_slack_widens_the_window(aredis: Redis) -> None:
    limiter = RedisRateLimiter(aredis, token=TOKEN, requests_per_second=2.5, window_slack=0.1)
    assert (limiter.limit, limiter.window) == (2, 1.1)
    with pytest.raises(ValueError, match="positive"):
        RedisRateLimiter(aredis, token=TOKEN, requests_per_second=0)
