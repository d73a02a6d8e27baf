"""Shared fixtures: a private PostgreSQL database and Redis database per run, the app, a worker.

`TEST_DATABASE_URL` names a PostgreSQL server (its database is only used to create and drop this
run's own database); `TEST_REDIS_URL` names a Redis server (this run claims a free database
number on it and flushes only that one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis as sync_redis
from alembic import command
from alembic.config import Config
from arq.connections import ArqRedis
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq.config import ArqSettings
from src.arq.pool import create_redis
from src.arq.registry import TaskRegistry
from src.arq.service import ArqService
from src.arq.worker import JobWorker, worker_options
from src.auth.config import AuthSettings
from src.config import Environment, Settings
from src.database import create_engine, create_sessionmaker
from src.main import create_app
from tests.tasks import registry as test_tasks_registry

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
RUN_ID = uuid.uuid4().hex[:10]
CLAIM_KEY = "vkp:test-run-claim"

API_KEYS = {
    "alice": "alice-key-0001",
    "bob": "bob-key-00002",
    "root": "root-key-00003",
}
API_KEYS_SETTING = "alice:user:alice-key-0001,bob:user:bob-key-00002,root:admin:root-key-00003"
JWT_SECRET = "test-jwt-secret-that-is-long-enough-0123456789"


def headers(owner: str) -> dict[str, str]:
    return {"X-API-Key": API_KEYS[owner]}


# -- PostgreSQL: one database per run -------------------------------------------------------


def migrate(database_url: str) -> None:
    config = Config("alembic.ini")
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    server = make_url(TEST_DATABASE_URL)
    name = f"vkp_test_{RUN_ID}"
    admin_dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        yield url
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- Redis: one database number per run -----------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    base = TEST_REDIS_URL.rstrip("/")
    if base.rsplit("/", 1)[-1].isdigit():
        base = base.rsplit("/", 1)[0]
    claimed: tuple[int, sync_redis.Redis] | None = None
    for number in range(15, 0, -1):
        client = sync_redis.Redis.from_url(f"{base}/{number}")
        # Claim a database no other run holds and nothing else uses.
        if client.dbsize() == 0 and client.set(CLAIM_KEY, RUN_ID, nx=True, ex=3 * 3600):
            claimed = (number, client)
            break
        client.close()
    if claimed is None:
        pytest.fail(f"no free Redis database (1-15) on {base} for this test run")
    number, client = claimed
    try:
        yield f"{base}/{number}"
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[sync_redis.Redis]:
    """A synchronous client on this run's Redis database, emptied (but for the claim) first."""
    client = sync_redis.Redis.from_url(redis_url)
    for key in client.scan_iter(count=1000):
        if key != CLAIM_KEY.encode():
            client.delete(key)
    yield client
    client.close()


# -- settings, app, worker ------------------------------------------------------------------


@pytest.fixture
def settings(redis_url: str, database_url: str, redis_db: sync_redis.Redis) -> Settings:
    return Settings(
        redis_url=redis_url,
        database_url=database_url,
        environment=Environment.TEST,
        redis_timeout=2.0,
        database_timeout=3.0,
    )


@pytest.fixture
def arq_settings() -> ArqSettings:
    return ArqSettings(poll_delay=0.05, max_jobs=10, job_timeout=30, abort_wait=3.0)


@pytest.fixture
def auth_settings() -> AuthSettings:
    return AuthSettings(api_keys=API_KEYS_SETTING, jwt_secret=JWT_SECRET)  # type: ignore[arg-type]


@pytest.fixture
def registry() -> TaskRegistry:
    return test_tasks_registry


@pytest.fixture
async def sessionmaker(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings.database_url)
    async with engine.begin() as conn:
        await conn.exec_driver_sql("TRUNCATE arq_jobs")
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def redis(settings: Settings, arq_settings: ArqSettings) -> AsyncIterator[ArqRedis]:
    pool = create_redis(settings.redis_url, queue_name=arq_settings.queue_name)
    yield pool
    await pool.aclose(close_connection_pool=True)


@pytest.fixture
def service(
    redis: ArqRedis,
    sessionmaker: async_sessionmaker[AsyncSession],
    registry: TaskRegistry,
    arq_settings: ArqSettings,
) -> ArqService:
    return ArqService(
        redis=redis, sessionmaker=sessionmaker, registry=registry, settings=arq_settings
    )


@pytest.fixture
async def app(
    settings: Settings,
    arq_settings: ArqSettings,
    auth_settings: AuthSettings,
    registry: TaskRegistry,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[Any]:
    application = create_app(
        settings=settings,
        arq_settings=arq_settings,
        auth_settings=auth_settings,
        registry=registry,
    )
    async with application.router.lifespan_context(application):
        yield application


@contextlib.asynccontextmanager
async def client_for(settings: Settings, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app built with other settings than the `app` fixture's."""
    kwargs.setdefault("auth_settings", AuthSettings(api_keys=API_KEYS_SETTING))  # type: ignore[arg-type]
    kwargs.setdefault("registry", test_tasks_registry)
    application = create_app(settings=settings, **kwargs)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


@contextlib.asynccontextmanager
async def app_and_worker(
    settings: Settings, *, arq_settings: ArqSettings, auth_settings: AuthSettings
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app and a running in-process worker, both on other settings than the
    fixtures' (another database, say)."""
    handle = WorkerHandle(
        worker_options(registry=test_tasks_registry, settings=settings, arq_settings=arq_settings)
    )
    async with client_for(settings, arq_settings=arq_settings, auth_settings=auth_settings) as http:
        await handle.start()
        try:
            yield http
        finally:
            await handle.stop()


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


class WorkerHandle:
    """An in-process ARQ worker running the app's hooks, as `arq` would build it."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.worker: JobWorker | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> JobWorker:
        self.worker = JobWorker(**self.options, handle_signals=False)
        self.task = asyncio.create_task(self.worker.async_run())
        return self.worker

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        self.worker = self.task = None


@pytest.fixture
async def worker_handle(
    settings: Settings, arq_settings: ArqSettings, registry: TaskRegistry
) -> AsyncIterator[WorkerHandle]:
    handle = WorkerHandle(
        worker_options(registry=registry, settings=settings, arq_settings=arq_settings)
    )
    yield handle
    await handle.stop()


@pytest.fixture
async def worker(worker_handle: WorkerHandle) -> JobWorker:
    return await worker_handle.start()
