"""Fixtures of the VK client tests: the fake VK server, an async Redis client, clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from src.vk.client import VKClient
from src.vk.config import VKSettings
from src.vk.ratelimit import RedisRateLimiter
from tests.vk.fake_server import TOKEN, FakeVK, serve

MakeClient = Callable[..., VKClient]


@pytest.fixture
async def fake_vk() -> AsyncIterator[FakeVK]:
    fake = FakeVK()
    async with serve(fake):
        yield fake


@pytest.fixture
async def aredis(redis_url: str, redis_db: sync_redis.Redis) -> AsyncIterator[Redis]:
    """An async client on this run's Redis database (emptied by `redis_db`)."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def vk_settings_for(url: str, **overrides: Any) -> VKSettings:
    """Settings for tests: fast rate and tiny backoffs unless overridden; no `.env`."""
    values: dict[str, Any] = {
        "token": TOKEN,
        "api_url": url,
        "requests_per_second": 20,
        "timeout": 2,
        "max_retries": 3,
        "retry_backoff": 0.01,
        "retry_backoff_max": 0.05,
        "rate_window_slack": 0.05,
    } | overrides
    return VKSettings(_env_file=None, **values)


@pytest.fixture
async def make_client(fake_vk: FakeVK, aredis: Redis) -> AsyncIterator[MakeClient]:
    """Build clients of the fake server with settings overrides; all closed afterwards."""
    clients: list[VKClient] = []

    def make(**overrides: Any) -> VKClient:
        settings = vk_settings_for(fake_vk.url, **overrides)
        client = VKClient(settings, limiter=RedisRateLimiter.from_settings(aredis, settings))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def vk(make_client: MakeClient) -> VKClient:
    return make_client()
