"""The Redis-shared rate limiter, on the run's real Redis."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from src.vk.ratelimit import KEY_PREFIX, RedisRateLimiter, rate_key

TOKEN = "limiter-test-token-abc123"


async def redis_now_us(redis: Redis) -> int:
    """Redis' clock, the one the limiter stamps grants with (µs)."""
    seconds, micros = await redis.time()
    return int(seconds) * 1_000_000 + int(micros)


async def oldest_grant_us(redis: Redis, limiter: RedisRateLimiter) -> int:
    ((_, score),) = await redis.zrange(limiter.key, 0, 0, withscores=True)
    return int(score)


async def test_try_acquire_grants_up_to_the_limit_then_says_how_long(aredis: Redis) -> None:
    # A 2 s window: four round trips fit in it however busy the machine is.
    limiter = RedisRateLimiter(aredis, token=TOKEN, requests_per_second=3, window_slack=1.0)
    window_us = 2_000_000
    assert [await limiter.try_acquire() for _ in range(3)] == [0, 0, 0]
    before = await redis_now_us(aredis)
    wait = await limiter.try_acquire()
    after = await redis_now_us(aredis)
    # The wait is exactly what remains of the oldest grant's window when the try ran (Redis time).
    expires = await oldest_grant_us(aredis, limiter) + window_us
    assert (expires - after) / 1e6 <= wait <= (expires - before) / 1e6
    assert 0 < wait <= 2.0
    # A refused try takes nothing: the wait only shrinks.
    assert await limiter.try_acquire() <= wait
    assert await aredis.zcard(limiter.key) == 3
    await asyncio.sleep(wait + 0.01)  # sleeping longer than asked can only free more slots
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
    # One grant per 10 s: the third call surely falls in the first one's window.
    one = RedisRateLimiter(aredis, token="token-one", requests_per_second=1, window_slack=9)
    two = RedisRateLimiter(aredis, token="token-two", requests_per_second=1, window_slack=9)
    assert await one.try_acquire() == 0
    assert await two.try_acquire() == 0
    assert await one.try_acquire() > 0


async def test_processes_share_one_budget(aredis: Redis, redis_url: str) -> None:
    """Two limiters on separate connections (as two processes would be) share 5/s."""
    other = Redis.from_url(redis_url)
    grants: dict[bytes, int] = {}
    try:
        limiters = [
            RedisRateLimiter(redis, token=TOKEN, requests_per_second=5) for redis in (aredis, other)
        ]
        key = limiters[0].key

        async def take(limiter: RedisRateLimiter) -> None:
            await limiter.acquire()
            # The grant log holds each grant for a full window after it was made, so reading it
            # right after our own grant records that grant with its Redis timestamp.
            for member, score in await aredis.zrange(key, 0, -1, withscores=True):
                grants[member] = int(score)

        await asyncio.gather(*[take(limiter) for limiter in limiters for _ in range(7)])
    finally:
        await other.aclose()
    assert len(grants) == 14
    # Timed by Redis, as the limiter grants: any 6 consecutive grants span at least a window,
    # so 14 grants at 5/s take at least two windows (separate budgets would need one).
    times = sorted(grants.values())
    assert all(times[i + 5] - times[i] >= 1_000_000 for i in range(len(times) - 5)), times
    assert times[-1] - times[0] >= 2_000_000


async def test_rate_below_one_per_second(aredis: Redis) -> None:
    limiter = RedisRateLimiter(aredis, token=TOKEN, requests_per_second=0.5)
    assert (limiter.limit, limiter.window) == (1, 2.0)
    assert await limiter.try_acquire() == 0
    before = await redis_now_us(aredis)
    wait = await limiter.try_acquire()
    after = await redis_now_us(aredis)
    expires = await oldest_grant_us(aredis, limiter) + 2_000_000
    assert (expires - after) / 1e6 <= wait <= (expires - before) / 1e6
    assert 0 < wait <= 2.0


def test_fractional_rates_round_down_and_slack_widens_the_window(aredis: Redis) -> None:
    limiter = RedisRateLimiter(aredis, token=TOKEN, requests_per_second=2.5, window_slack=0.1)
    assert (limiter.limit, limiter.window) == (2, 1.1)
    with pytest.raises(ValueError, match="positive"):
        RedisRateLimiter(aredis, token=TOKEN, requests_per_second=0)
