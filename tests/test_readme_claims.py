"""README promises that no other test held to: each checked here against real services.

Redis, PostgreSQL, in-process and CLI workers, the fake VK server; no mocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis as sync_redis
from sqlalchemy import text as sa_text

from src.arq import keys
from src.arq.config import ArqSettings
from src.arq.registry import TaskRegistry
from src.arq.worker import worker_options
from src.auth.config import DEVELOPMENT_API_KEY, AuthSettings
from src.config import Environment, Settings
from src.vk.ratelimit import rate_key
from tests.arq.helpers import API, enqueue, status, wait_for
from tests.arq.test_worker_process import ARQ, worker_env
from tests.conftest import (
    API_KEYS,
    API_KEYS_SETTING,
    CLAIM_KEY,
    WorkerHandle,
    claim_database,
    client_for,
    headers,
)
from tests.vk.fake_server import TOKEN, FakeVK, community_with_posts, serve


@contextlib.contextmanager
def capture(logger_name: str, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Records of `logger_name` reach caplog even if the app's logging setup stops them."""
    logger = logging.getLogger(logger_name)
    logger.addHandler(caplog.handler)
    try:
        yield
    finally:
        logger.removeHandler(caplog.handler)


def arq_settings_for_tests(**overrides: Any) -> ArqSettings:
    return ArqSettings(_env_file=None, **{"poll_delay": 0.05, **overrides})


async def until(condition: Any, *, timeout: float, what: str) -> None:
    """Wait for an awaitable-returning `condition()` to be true (the machine may be busy)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


# -- "the API logs a warning while it is enabled" (the development key) ------------------------


async def test_development_key_is_warned_about_at_start(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    development = settings.model_copy(update={"environment": Environment.DEVELOPMENT})
    dev_keys = AuthSettings(
        _env_file=None,
        api_keys=f"dev:admin:{DEVELOPMENT_API_KEY}",
    )
    caplog.set_level(logging.WARNING)
    with capture("src.main", caplog):
        async with client_for(development, auth_settings=dev_keys) as client:
            response = await client.get(f"{API}/tasks", headers={"X-API-Key": DEVELOPMENT_API_KEY})
            assert response.status_code == 200  # it works, as the README's curl examples need
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("development API key" in message for message in warned), warned
        caplog.clear()
        own_keys = AuthSettings(_env_file=None, api_keys=API_KEYS_SETTING)
        async with client_for(development, auth_settings=own_keys):
            pass
        assert not [r for r in caplog.records if "development API key" in r.getMessage()]


# -- "Redis or the database unreachable: 503 with Retry-After" --------------------------------

DEAD_REDIS = "redis://127.0.0.1:1/0"
DEAD_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"


async def test_503s_carry_retry_after(settings: Settings) -> None:
    for broken in (
        settings.model_copy(update={"redis_url": DEAD_REDIS, "redis_timeout": 1.0}),
        settings.model_copy(update={"database_url": DEAD_POSTGRES, "database_timeout": 1.0}),
    ):
        async with client_for(broken, arq_settings=arq_settings_for_tests()) as client:
            response = await asyncio.wait_for(
                client.get(f"{API}/queue/info", headers=headers("alice")), 20
            )
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "ServiceUnavailable"
        assert int(response.headers["Retry-After"]) >= 1


# -- "seconds before a call gives up (the API answers 503, never hangs)" ------------------------


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel completes them) and never says a word."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


async def test_a_redis_that_never_answers_gives_503_not_a_hang(settings: Settings) -> None:
    with silent_server() as port:
        silent = settings.model_copy(
            update={"redis_url": f"redis://127.0.0.1:{port}/0", "redis_timeout": 1.0}
        )
        async with client_for(silent, arq_settings=arq_settings_for_tests()) as client:
            # Far longer than the 1 s timeout (the machine may be busy), far shorter than never.
            info = await asyncio.wait_for(
                client.get(f"{API}/queue/info", headers=headers("alice")), 30
            )
            health = await asyncio.wait_for(client.get(f"{API}/health"), 30)
    assert info.status_code == 503, info.text
    assert "Retry-After" in info.headers
    assert health.status_code == 503
    assert health.json()["details"]["redis_connected"] is False


async def test_a_database_that_never_answers_gives_503_not_a_hang(settings: Settings) -> None:
    with silent_server() as port:
        silent = settings.model_copy(
            update={
                "database_url": f"postgresql+asyncpg://postgres@127.0.0.1:{port}/silent",
                "database_timeout": 1.0,
            }
        )
        async with client_for(silent, arq_settings=arq_settings_for_tests()) as client:
            jobs = await asyncio.wait_for(client.get(f"{API}/jobs", headers=headers("alice")), 30)
            health = await asyncio.wait_for(client.get(f"{API}/health"), 30)
    assert jobs.status_code == 503, jobs.text
    assert "Retry-After" in jobs.headers
    assert health.status_code == 503
    assert health.json()["details"]["database_connected"] is False


# -- "a job that would wait long for the limit gives its worker slot back and runs again" -----


async def test_a_throttled_vk_job_gives_its_slot_back(
    client: httpx.AsyncClient,
    settings: Settings,
    registry: TaskRegistry,
    redis_db: sync_redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeVK()
    fake.add(community_with_posts(1, 1, 0, community_id=31))
    async with serve(fake):
        monkeypatch.setenv("VK_TOKEN", TOKEN)
        monkeypatch.setenv("VK_API_URL", fake.url)
        monkeypatch.setenv("VK_REQUESTS_PER_SECOND", "50")
        # Another process used the token's whole budget, and it frees only in a minute.
        seconds, micros = cast(tuple[int, int], redis_db.time())
        later = (seconds + 60) * 1_000_000 + micros
        redis_db.zadd(rate_key(TOKEN), {f"elsewhere-{i}": later for i in range(50)})
        handle = WorkerHandle(
            worker_options(
                registry=registry,
                settings=settings,
                arq_settings=arq_settings_for_tests(max_jobs=1),
            )
        )
        await handle.start()
        try:
            parse = await client.post(
                "/api/v1/comments/parse/vk/async", params={"group_id": 31}, headers=headers("alice")
            )
            assert parse.status_code == 202, parse.text
            job_id = parse.json()["data"]["job_id"]
            waiting = await wait_for(client, job_id, ("retrying",), timeout=30)
            # Its worker's only slot is free again: another job runs meanwhile.
            other = (await enqueue(client, "add", kwargs={"a": 1})).json()["job_id"]
            assert (await wait_for(client, other, timeout=30))["status"] == "complete"
            assert (await status(client, job_id))["status"] == "retrying"
        finally:
            await handle.stop()
    assert waiting["tries"] == 1
    assert "VK" in waiting["message"], waiting
    assert waiting["scheduled_for"] is not None  # when it runs again
    assert fake.requests == []  # VK never saw a request over the budget


# -- "every worker reconciles ... (one worker at a time)" -------------------------------------


async def test_one_worker_at_a_time_reconciles(
    client: httpx.AsyncClient,
    settings: Settings,
    registry: TaskRegistry,
    redis_db: sync_redis.Redis,
    sessionmaker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    arq_settings = arq_settings_for_tests()
    # A job Redis still stores but lost from its queue, on record long enough to be looked at.
    job_id = (await enqueue(client, "add", kwargs={"a": 1}, defer_by=3600)).json()["job_id"]
    redis_db.zrem(arq_settings.queue_name, job_id)
    async with sessionmaker.begin() as session:
        await session.execute(
            sa_text("UPDATE arq_jobs SET enqueued_at = enqueued_at - interval '1 minute'")
        )
    handles = [
        WorkerHandle(
            worker_options(registry=registry, settings=settings, arq_settings=arq_settings)
        )
        for _ in range(2)
    ]
    caplog.set_level(logging.INFO)
    with capture("src.arq.reconcile", caplog):
        workers = await asyncio.gather(*(handle.start() for handle in handles))
        try:

            async def restored() -> bool:
                return redis_db.zscore(arq_settings.queue_name, job_id) is not None

            await until(restored, timeout=30, what="the lost job back in the queue")

            async def reported() -> bool:
                # The pass logs once it is over: the restore alone may be seen before that.
                return any("reconciled the job history" in r.getMessage() for r in caplog.records)

            await until(reported, timeout=30, what="the reconciliation's report")
            lock = cast(bytes | None, redis_db.get(keys.reconcile_lock(arq_settings.queue_name)))
            ids = {worker.ctx["worker_id"] for worker in workers}
        finally:
            for handle in handles:
                await handle.stop()
    # Both started at once, both wanted to reconcile; one held the lock and did it.
    assert lock is not None and lock.decode() in ids, (lock, ids)
    # (A record can reach caplog twice, through `capture` and through the root logger.)
    passes = list(
        {
            id(r): r for r in caplog.records if "reconciled the job history" in r.getMessage()
        }.values()
    )
    assert len(passes) == 1, [r.getMessage() for r in passes]
    assert "1 restored to the queue" in passes[0].getMessage()


# -- "GET /api/v1/arq/health counts live workers from their 5-second heartbeats" --------------


async def test_a_killed_worker_drops_out_of_health(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    async def workers() -> int:
        body = (await client.get(f"{API}/health")).json()
        count: int = body["details"]["workers"]
        return count

    process = subprocess.Popen(
        [ARQ, "tests.worker_settings.WorkerSettings"],
        cwd=tmp_path,
        env=worker_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        async def one() -> bool:
            return await workers() == 1

        async def none() -> bool:
            return await workers() == 0

        await until(one, timeout=45, what="the worker counted")
        process.send_signal(signal.SIGKILL)  # no shutdown: its heartbeat just stops
        await asyncio.to_thread(process.wait, 20)
        stopped_at = time.monotonic()
        await until(none, timeout=60, what="the dead worker dropping out")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
    # Not at once (it said nothing when it died): once its heartbeats are overdue.
    assert time.monotonic() - stopped_at > 1


# -- the suite itself: "never touches other data" ----------------------------------------------


@pytest.fixture
def hostile_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory whose `.env` would point the suite at someone else's services."""
    (tmp_path / ".env").write_text(
        "REDIS_URL=redis://127.0.0.1:1/0\n"
        "DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:1/not_yours\n"
        "ENVIRONMENT=production\n"
        "REDIS_TIMEOUT=99\n"
        "API_KEYS=evil:admin:evil-key-00001\n"
        "JWT_SECRET=\n"
        "ARQ_QUEUE_NAME=someone:elses:queue\n"
        "ARQ_MAX_JOBS=1\n"
        "ARQ_ENQUEUE_RATE_LIMIT=1\n"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


async def test_a_developers_env_file_does_not_reach_the_fixtures(
    hostile_cwd: Path,
    settings: Settings,
    arq_settings: ArqSettings,
    auth_settings: AuthSettings,
    redis_url: str,
    client: httpx.AsyncClient,
    redis_db: sync_redis.Redis,
) -> None:
    assert (settings.redis_url, settings.environment) == (redis_url, Environment.TEST)
    assert settings.redis_timeout == 2.0
    assert (arq_settings.queue_name, arq_settings.max_jobs) == ("arq:queue", 10)
    assert {key.owner for key in auth_settings.keys()} == set(API_KEYS)  # noqa: SIM118
    for _ in range(2):  # a rate limit of 1 from the .env would refuse the second
        assert (await enqueue(client, "add", kwargs={"a": 1})).status_code == 202
    assert redis_db.zcard("arq:queue") == 2
    async with client_for(settings) as other:  # the default auth settings, too
        assert (await other.get(f"{API}/tasks", headers=headers("bob"))).status_code == 200


def test_an_interrupted_runs_redis_claim_lapses_quickly(redis_url: str) -> None:
    """A run claims its database for a minute and renews the claim while it lives; a claim left
    by an interrupted run lapses, and the next run flushes that database and takes it. A
    database holding anything else is never taken."""
    base = redis_url.rsplit("/", 1)[0]
    spare: sync_redis.Redis | None = None
    for number in range(1, 16):
        if f"{base}/{number}" == redis_url:
            continue
        candidate = sync_redis.Redis.from_url(f"{base}/{number}")
        if claim_database(candidate, run_id="interrupted-run"):
            spare = candidate
            break
        candidate.close()
    if spare is None:
        pytest.skip("no spare Redis database to play an interrupted run in")
    try:
        spare.set("left-over", "by the interrupted run")
        assert not claim_database(spare, run_id="next-run")  # the claim is live for a minute
        assert not claim_database(spare, run_id="next-run", renew=True)  # renewing is no claim
        # The interrupted run stops renewing; here its claim was last renewed for 1 s.
        assert claim_database(spare, run_id="interrupted-run", seconds=1)
        deadline = time.monotonic() + 30
        while not claim_database(spare, run_id="next-run"):
            assert time.monotonic() < deadline, "the lapsed claim was never given up"
            time.sleep(0.05)
        assert spare.get("left-over") is None  # flushed for the next run
        assert spare.get(CLAIM_KEY) is not None
        assert claim_database(spare, run_id="next-run", renew=True)  # a live run renews
        # Data that is no test run's: never taken, never flushed.
        spare.flushdb()
        spare.set("someone-elses", "data")
        assert not claim_database(spare, run_id="third-run")
        assert spare.get("someone-elses") == b"data"
    finally:
        spare.flushdb()
        spare.close()


async def test_a_crashed_in_process_worker_fails_the_test(
    settings: Settings, registry: TaskRegistry
) -> None:
    """Otherwise "no job ran" checks would pass on a dead worker."""

    async def broken_startup(ctx: dict[str, Any]) -> None:
        raise RuntimeError("the worker's start-up failed")

    options = worker_options(
        registry=registry, settings=settings, arq_settings=arq_settings_for_tests()
    )
    handle = WorkerHandle({**options, "on_startup": broken_startup})
    await handle.start()

    async def crashed() -> bool:
        return handle.crash() is not None

    await until(crashed, timeout=30, what="the worker's crash")
    with pytest.raises(AssertionError, match="in-process worker crashed: RuntimeError"):
        await handle.stop()
