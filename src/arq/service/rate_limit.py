"""The enqueue rate limit: jobs per owner and minute (`ARQ_ENQUEUE_RATE_LIMIT`).

Counted in Redis, so that every API process shares one count; while Redis is unreachable,
counted per process instead (`LocalRateLimiter`), so that the limit never fails open.
"""

from __future__ import annotations

import time

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from src.arq import keys
from src.arq.config import ArqSettings
from src.arq.exceptions import RateLimited


class EnqueueRateLimit:
    """The per-minute enqueue limit of each owner, shared through Redis."""

    def __init__(self, redis: ArqRedis, settings: ArqSettings) -> None:
        self.redis = redis
        self.settings = settings
        # Used while Redis is unreachable, so that the enqueue limit never fails open.
        self._local_limits = LocalRateLimiter()

    async def charge(self, owner: str, count: int) -> None:
        """Count `count` jobs against the owner's per-minute limit (shared through Redis; while
        Redis is unreachable, counted per process instead: the limit never fails open)."""
        limit = self.settings.enqueue_rate_limit
        if limit == 0:
            return
        now = time.time()
        window = int(now // 60)
        key = keys.rate_limit(owner, window)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incrby(key, count)
                pipe.expire(key, 120)
                used, _ = await pipe.execute()
            if used > limit:
                await self.redis.decrby(key, count)
        except (RedisError, OSError):
            used = self._local_limits.charge(owner, window, count, limit=limit)
        if used > limit:
            raise RateLimited(retry_after=max(1, 60 - int(now % 60)))

    async def refund(self, owner: str, count: int) -> None:
        """Give back `count` jobs charged this minute (they were not queued after all)."""
        if self.settings.enqueue_rate_limit == 0:
            return
        try:
            await self.redis.decrby(keys.rate_limit(owner, int(time.time() // 60)), count)
        except (RedisError, OSError):
            self._local_limits.refund(owner, count)


class LocalRateLimiter:
    """Per-process enqueue counters per owner and minute, for when Redis cannot count."""

    def __init__(self) -> None:
        self._used: dict[tuple[str, int], int] = {}

    def charge(self, owner: str, window: int, count: int, *, limit: int) -> int:
        """Count `count` jobs; the total including them (not counted if over `limit`)."""
        for key in [key for key in self._used if key[1] < window]:
            del self._used[key]  # earlier minutes
        used = self._used.get((owner, window), 0) + count
        if used <= limit:
            self._used[(owner, window)] = used
        return used

    def refund(self, owner: str, count: int) -> None:
        for key in self._used:
            if key[0] == owner:
                self._used[key] = max(0, self._used[key] - count)
