"""Shared fixtures: a private PostgreSQL database and Redis database per run, the app, a worker.

`TEST_DATABASE_URL` names a PostgreSQL server (its database is only used to create and drop this
run's own database); `TEST_REDIS_URL` names a Redis server (this run claims a free database
number on it and flushes only that one).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
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
from src.dashboard.config import DashboardSettings
from src.database import create_engine, create_sessionmaker
from tests.servers import started_app
from tests.tasks import registry as test_tasks_registry

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
ROOT = Path(__file__).resolve().parent.parent
RUN_ID = uuid.uuid4().hex[:10]
CLAIM_KEY = "vkp:test-run-claim"

API_KEYS = {
    "alice": "alice-key-0001",
    "bob": "bob-key-00002",
    "root": "root-key-00003",
}
API_KEYS_SETTING = "alice:user:alice-key-0001,bob:user:bob-key-00002,root:admin:root-key-00003"
JWT_SECRET = "test-jwt-secret-that-is-long-enough-0123456789"


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After a file's last test (its fixtures finalised): collect what it left and freeze the
    survivors out of the collector's sight. Otherwise a later test pauses for a full collection
    over the whole run's heap, hundreds of milliseconds once the run is large: long enough to
    miss a test's 0.3 s timeout or to hold its event loop past a limit."""
    if nextitem is None or nextitem.path != item.path:
        gc.collect()
        gc.freeze()


def headers(owner: str) -> dict[str, str]:
    return {"X-API-Key": API_KEYS[owner]}


# -- PostgreSQL: one database per run -------------------------------------------------------


def migrate(database_url: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
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


# A claim is `<run id>:<expiry in ms, Redis time>`, renewed while the run lives. A database holding
# a lapsed claim is an interrupted run's leftovers: the next run flushes and takes it. Any other
# database must be empty to be taken, so a run never touches data that is not a test run's.
CLAIM_SECONDS = 60
CLAIM_RENEW_EVERY = 15
CLAIM_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = redis.call('GET', KEYS[1])
if current then
  local owner, expires = string.match(current, '^(.*):(%d+)$')
  if owner ~= ARGV[1] then
    if ARGV[3] == 'renew' or not expires or tonumber(expires) > now then return 0 end
    redis.call('FLUSHDB')  -- a lapsed claim: an interrupted run's leftovers
  end
elseif redis.call('DBSIZE') > 0 then
  -- Someone's data (or, when renewing, a database taken after a test flushed ours).
  return 0
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. (now + tonumber(ARGV[2])))
return 1
"""


def claim_database(
    client: sync_redis.Redis,
    *,
    renew: bool = False,
    run_id: str = RUN_ID,
    seconds: float = CLAIM_SECONDS,
) -> bool:
    """Take (or renew) a run's claim on `client`'s database for `seconds`, atomically."""
    mode = "renew" if renew else "claim"
    ttl_ms = str(int(seconds * 1000))
    return bool(client.eval(CLAIM_SCRIPT, 1, CLAIM_KEY, run_id, ttl_ms, mode))


class ClaimRenewer(threading.Thread):
    """Renews the claim while the run lives; an interrupted run's claim lapses within a minute."""

    def __init__(self, url: str) -> None:
        super().__init__(name="redis-claim-renewer", daemon=True)
        self.url = url
        self.stopped = threading.Event()

    def run(self) -> None:
        client = sync_redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            while not self.stopped.wait(CLAIM_RENEW_EVERY):
                with contextlib.suppress(sync_redis.RedisError):
                    claim_database(client, renew=True)
        finally:
            client.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    base = TEST_REDIS_URL.rstrip("/")
    if base.rsplit("/", 1)[-1].isdigit():
        base = base.rsplit("/", 1)[0]
    claimed: tuple[int, sync_redis.Redis] | None = None
    for number in range(15, 0, -1):
        client = sync_redis.Redis.from_url(f"{base}/{number}")
        # Claim a database no live run holds and nothing else uses.
        if claim_database(client):
            claimed = (number, client)
            break
        client.close()
    if claimed is None:
        pytest.fail(f"no free Redis database (1-15) on {base} for this test run")
    number, client = claimed
    renewer = ClaimRenewer(f"{base}/{number}")
    renewer.start()
    try:
        yield f"{base}/{number}"
    finally:
        renewer.stop()
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
        _env_file=None,  # a developer's ./.env must not reach the suite
        redis_url=redis_url,
        database_url=database_url,
        environment=Environment.TEST,
        redis_timeout=2.0,
        database_timeout=3.0,
    )


@pytest.fixture
def arq_settings() -> ArqSettings:
    return ArqSettings(_env_file=None, poll_delay=0.05, max_jobs=10, job_timeout=30, abort_wait=3.0)


@pytest.fixture
def auth_settings() -> AuthSettings:
    return AuthSettings(
        _env_file=None,
        api_keys=API_KEYS_SETTING,
        jwt_secret=JWT_SECRET,
    )


@pytest.fixture
def registry() -> TaskRegistry:
    return test_tasks_registry


@pytest.fixture
async def sessionmaker(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings.database_url)
    async with engine.begin() as conn:
        await conn.exec_driver_sql("TRUNCATE arq_jobs, arq_job_dependencies")
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
def dashboard_settings() -> DashboardSettings | None:
    """The `app` fixture's dashboard settings: None, from the environment (the dashboard tests
    give their own)."""
    return None


@pytest.fixture
async def app(
    settings: Settings,
    arq_settings: ArqSettings,
    auth_settings: AuthSettings,
    registry: TaskRegistry,
    sessionmaker: async_sessionmaker[AsyncSession],
    dashboard_settings: DashboardSettings | None,
) -> AsyncIterator[Any]:
    async with started_app(
        settings=settings,
        arq_settings=arq_settings,
        auth_settings=auth_settings,
        registry=registry,
        dashboard_settings=dashboard_settings,
    ) as application:
        yield application


@contextlib.asynccontextmanager
async def client_for(settings: Settings, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app built with other settings than the `app` fixture's."""
    kwargs.setdefault(
        "auth_settings",
        AuthSettings(_env_file=None, api_keys=API_KEYS_SETTING),
    )
    kwargs.setdefault("registry", test_tasks_registry)
    async with started_app(settings=settings, **kwargs) as application:
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

    def crash(self) -> BaseException | None:
        """What ended the worker on its own (not by `stop`), if it did."""
        if self.task is None or not self.task.done() or self.task.cancelled():
            return None
        return self.task.exception()

    async def stop(self) -> None:
        # A worker that died mid-test would make "no job ran" checks pass: fail the test.
        crashed = self.crash()
        try:
            if self.worker is not None:
                try:
                    await self.worker.close()
                except Exception:
                    if crashed is None:
                        raise  # otherwise the crash is the news; closing what is left may fail
            if self.task is not None and crashed is None:
                self.task.cancel()
                # What ends the task once we stopped it is the stopping, not a crash.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self.task
        finally:
            self.worker = self.task = None
        if crashed is not None:
            raise AssertionError(f"the in-process worker crashed: {crashed!r}") from crashed


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
