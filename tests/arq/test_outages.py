"""Redis or the database away: clear 503s, no hangs, nothing half-recorded; and rate limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis as sync_redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq.config import ArqSettings
from src.arq.models import JobRecord
from src.auth.config import AuthSettings
from src.config import Environment, Settings
from tests.arq.helpers import API, enqueue
from tests.conftest import CLAIM_KEY, client_for, headers

# Nothing listens on port 1 of the loopback address: connections are refused at once.
DEAD_REDIS = "redis://127.0.0.1:1/0"
DEAD_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"


@pytest.fixture
async def no_redis_client(
    settings: Settings,
    arq_settings: ArqSettings,
    auth_settings: AuthSettings,
    registry: Any,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[httpx.AsyncClient]:
    broken = settings.model_copy(update={"redis_url": DEAD_REDIS, "redis_timeout": 1.0})
    async with client_for(
        broken, arq_settings=arq_settings, auth_settings=auth_settings, registry=registry
    ) as client:
        yield client


@pytest.fixture
async def no_database_client(
    settings: Settings, arq_settings: ArqSettings, auth_settings: AuthSettings, registry: Any
) -> AsyncIterator[httpx.AsyncClient]:
    broken = settings.model_copy(update={"database_url": DEAD_POSTGRES, "database_timeout": 1.0})
    async with client_for(
        broken, arq_settings=arq_settings, auth_settings=auth_settings, registry=registry
    ) as client:
        yield client


async def test_redis_down_enqueue_is_accepted_and_kept_in_history(
    no_redis_client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The job waits in the database; test_faults shows it runs once Redis is back."""
    response = await asyncio.wait_for(enqueue(no_redis_client, "add", kwargs={"a": 1}), 10)
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    async with sessionmaker() as session:
        record = await session.get(JobRecord, job_id)
    assert record is not None
    assert (record.status, record.args) == ("queued", {"a": 1, "b": 0})
    status = await no_redis_client.get(f"{API}/status/{job_id}", headers=headers("alice"))
    assert status.json()["status"] == "queued"


async def test_redis_down_health_is_503(no_redis_client: httpx.AsyncClient) -> None:
    response = await asyncio.wait_for(no_redis_client.get(f"{API}/health"), 10)
    assert response.status_code == 503
    body = response.json()
    assert body["healthy"] is False
    assert body["details"]["redis_connected"] is False
    assert body["details"]["database_connected"] is True
    assert body["details"]["queue_info"]["queued_jobs_count"] is None


async def test_redis_down_queue_info_is_503(no_redis_client: httpx.AsyncClient) -> None:
    response = await asyncio.wait_for(
        no_redis_client.get(f"{API}/queue/info", headers=headers("alice")), 10
    )
    assert response.status_code == 503
    assert response.json()["error"] == "ServiceUnavailable"


async def test_redis_down_status_falls_back_to_history(
    client: httpx.AsyncClient, no_redis_client: httpx.AsyncClient
) -> None:
    job_id = (await enqueue(client, "add", kwargs={"a": 1})).json()["job_id"]
    response = await no_redis_client.get(f"{API}/status/{job_id}", headers=headers("alice"))
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    abort = await no_redis_client.delete(f"{API}/abort/{job_id}", headers=headers("alice"))
    assert abort.status_code == 503


async def test_database_down_is_503_everywhere(no_database_client: httpx.AsyncClient) -> None:
    for method, path, body in [
        ("POST", f"{API}/enqueue", {"function_name": "add", "kwargs": {"a": 1}}),
        ("GET", f"{API}/status/some-job", None),
        ("GET", f"{API}/result/some-job", None),
        ("DELETE", f"{API}/abort/some-job", None),
        ("GET", f"{API}/jobs", None),
        ("GET", f"{API}/queue/info", None),
    ]:
        response = await asyncio.wait_for(
            no_database_client.request(method, path, json=body, headers=headers("alice")), 10
        )
        assert response.status_code == 503, (path, response.text)
        assert response.json()["error"] == "ServiceUnavailable"
        assert "database" in response.json()["detail"]
    health = await no_database_client.get(f"{API}/health")
    assert health.status_code == 503
    assert health.json()["details"]["database_connected"] is False
    assert health.json()["details"]["redis_connected"] is True


async def test_rate_limit_is_429_with_retry_after(
    settings: Settings,
    auth_settings: AuthSettings,
    registry: Any,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis_db: sync_redis.Redis,
) -> None:
    limited = ArqSettings(_env_file=None, poll_delay=0.05, enqueue_rate_limit=3)
    async with client_for(
        settings, arq_settings=limited, auth_settings=auth_settings, registry=registry
    ) as client:
        # The budget is per wall-clock minute: a scenario that straddles a minute's end proves
        # nothing either way, so it is played again from scratch (once is enough: it takes
        # far less than a minute).
        for _ in range(3):
            for key in redis_db.scan_iter(count=1000):
                if key != CLAIM_KEY.encode():
                    redis_db.delete(key)
            minute = int(time.time() // 60)
            outcome = await rate_limit_scenario(client)
            if int(time.time() // 60) == minute:
                break
        else:
            raise AssertionError("three scenarios in a row straddled a minute's end")
    alice, refused, bob, refused_batch, bob_again = outcome
    assert [r.status_code for r in alice] == [202, 202, 202]
    assert refused.status_code == 429
    assert refused.json()["error"] == "RateLimited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Other owners have their own budget; a refused batch costs nothing.
    assert (bob.status_code, refused_batch.status_code, bob_again.status_code) == (202, 429, 202)
    assert redis_db.zcard(limited.queue_name) == 5


async def rate_limit_scenario(client: httpx.AsyncClient) -> list[Any]:
    """Alice's 3 jobs and her 4th; Bob's job, his batch of 3, and one more."""
    alice = [await enqueue(client, "add", kwargs={"a": i}) for i in range(3)]
    refused = await enqueue(client, "add", kwargs={"a": 9})
    bob = await enqueue(client, "add", owner="bob", kwargs={"a": 1})
    batch = [{"function_name": "add", "kwargs": {"a": 1}}] * 3
    refused_batch = await client.post(f"{API}/enqueue-batch", json=batch, headers=headers("bob"))
    bob_again = await enqueue(client, "add", owner="bob", kwargs={"a": 2})
    return [alice, refused, bob, refused_batch, bob_again]


async def test_environment_is_test(settings: Settings) -> None:
    # Guards the fixtures: the suite never runs against a development or production setup.
    assert settings.environment is Environment.TEST
    assert settings.redis_url.rsplit("/", 1)[-1] != "0"
