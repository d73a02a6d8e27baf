"""Nothing lost: Redis flushed mid-run, Redis down at enqueue. Each test has a private
redis-server of its own, to stop, flush and restart at will."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from arq.connections import RedisSettings, create_pool
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from sqlalchemy import text

from src.arq.config import ArqSettings
from src.arq.queue import JobQueue
from src.arq.reconcile import reconcile
from src.arq.registry import TaskRegistry
from src.arq.scripts import CLAIM_SCRIPT, RETRY_KEY_SECONDS
from src.arq.worker import worker_options
from src.config import Settings
from tests.arq.helpers import API, enqueue, status, wait_for
from tests.conftest import WorkerHandle, client_for, headers

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="needs the redis-server binary")


class PrivateRedis:
    def __init__(self, directory: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = self.client()
        for _ in range(100):
            try:
                client.ping()
                break
            except sync_redis.ConnectionError:
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def client(self) -> sync_redis.Redis:
        return sync_redis.Redis.from_url(self.url)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


FAST = {"poll_delay": 0.05, "lease": 2.0, "reconcile_interval": 0.5, "max_jobs": 4}


@pytest.fixture
async def setup(
    settings: Settings, private_redis: PrivateRedis, registry: TaskRegistry, sessionmaker: Any
) -> AsyncIterator[tuple[Any, WorkerHandle]]:
    private = settings.model_copy(update={"redis_url": private_redis.url, "redis_timeout": 1.0})
    arq_settings = ArqSettings(_env_file=None, **FAST)  # type: ignore[arg-type]
    handle = WorkerHandle(
        worker_options(registry=registry, settings=private, arq_settings=arq_settings)
    )
    async with client_for(private, arq_settings=arq_settings) as client:
        yield client, handle
    await handle.stop()


def runs(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


async def test_flushall_mid_run_loses_no_job_and_runs_none_twice(
    setup: tuple[Any, WorkerHandle], private_redis: PrivateRedis, tmp_path: Path
) -> None:
    client, handle = setup
    log = tmp_path / "runs.log"
    await handle.start()
    batch = [{"function_name": "tick", "kwargs": {"log": str(log), "seconds": 0.4}}] * 24
    response = await client.post(f"{API}/enqueue-batch", json=batch, headers=headers("alice"))
    job_ids = [job["job_id"] for job in response.json()]
    await asyncio.sleep(0.6)  # some done, some running, most queued
    private_redis.client().flushall()
    done = [await wait_for(client, job_id, timeout=60) for job_id in job_ids]
    assert [job["status"] for job in done] == ["complete"] * 24
    assert sorted(runs(log)) == sorted(job_ids)  # every job ran, and exactly once


async def test_job_redis_loses_between_claim_and_run_is_queued_again_not_failed(
    setup: tuple[Any, WorkerHandle], private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """The flush lands after a worker claimed the job and before it read the job's data: ARQ
    would fail it as "job expired"; the history still holds it, so it runs, once."""
    client, handle = setup
    log = tmp_path / "runs.log"
    response = await enqueue(client, "tick", kwargs={"log": str(log), "seconds": 0})
    job_id = response.json()["job_id"]
    redis = private_redis.client()
    queue_name = ArqSettings(_env_file=None).queue_name  # type: ignore[call-arg]
    lease_ms, now = 60_000, int(time.time() * 1000)
    claimed = redis.eval(
        CLAIM_SCRIPT,
        2,
        queue_name,
        abort_jobs_ss,
        now,
        1,
        lease_ms,
        in_progress_key_prefix,
        100,
        job_key_prefix,
        retry_key_prefix,
        RETRY_KEY_SECONDS,
        1,
    )
    assert claimed[0].decode() == job_id
    score = int(float(claimed[1]))
    redis.flushall()  # the job's data, its place in the queue and its lease are gone
    worker = await handle.start()
    for _ in range(200):  # its start-up hooks have run (history, service)
        if "arq_service" in worker.ctx:
            break
        await asyncio.sleep(0.05)
    await worker.run_job(job_id, score)  # the worker that claimed it goes on to run it
    assert (await status(client, job_id))["status"] in ("queued", "deferred")  # not failed
    done = await wait_for(client, job_id, timeout=30)
    assert done["status"] == "complete", done
    assert runs(log) == [job_id]


async def test_ending_redis_loses_before_the_history_records_it_is_not_run_again(
    setup: tuple[Any, WorkerHandle],
    private_redis: PrivateRedis,
    sessionmaker: Any,
    tmp_path: Path,
) -> None:
    """The job ends, Redis holds its ending, the history has not recorded it yet (its row is
    locked) and Redis restarts empty: the job must not look lost to the reconciliation (which
    would run it again); once the history is free it records the ending the worker kept."""
    client, handle = setup
    log, until = tmp_path / "runs.log", tmp_path / "go"
    await handle.start()
    response = await enqueue(client, "tick", kwargs={"log": str(log), "until": str(until)})
    job_id = response.json()["job_id"]
    await wait_for(client, job_id, ("in_progress",))
    redis = private_redis.client()
    async with sessionmaker() as blocker:
        # The history writer's next transaction on this row waits for this one.
        await blocker.execute(
            text("SELECT 1 FROM arq_jobs WHERE job_id = :id FOR UPDATE"), {"id": job_id}
        )
        until.touch()
        await wait_until(lambda: redis.exists(result_key_prefix + job_id), "the job ends")
        redis.flushall()  # the ending is now only in the worker's memory
        # The worker takes the lease again while the ending is not recorded.
        await wait_until(
            lambda: redis.exists(in_progress_key_prefix + job_id), "the lease is taken again"
        )
        pool = await create_pool(RedisSettings.from_dsn(private_redis.url))
        try:
            report = await reconcile(
                queue=JobQueue.for_settings(pool, ArqSettings(_env_file=None, **FAST)),  # type: ignore[arg-type]
                sessionmaker=sessionmaker,
                lease_seconds=0,
                grace_seconds=0,
            )
        finally:
            await pool.aclose()
        assert job_id not in report.requeued
        await blocker.rollback()
    done = await wait_for(client, job_id, timeout=30)
    assert done["status"] == "complete", done
    assert runs(log) == [job_id]


async def wait_until(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)


async def test_job_accepted_while_redis_is_down_runs_when_it_returns(
    setup: tuple[Any, WorkerHandle], private_redis: PrivateRedis
) -> None:
    client, handle = setup
    await handle.start()
    private_redis.stop()
    response = await enqueue(client, "add", kwargs={"a": 20, "b": 1})
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    assert (await client.get(f"{API}/status/{job_id}", headers=headers("alice"))).json()[
        "status"
    ] == "queued"
    await asyncio.sleep(1.0)  # the worker keeps running without Redis
    private_redis.start()
    done = await wait_for(client, job_id, timeout=30)
    assert done["status"] == "complete"
    assert done["result"] == {"sum": 21}


async def test_worker_survives_redis_restart_and_keeps_working(
    setup: tuple[Any, WorkerHandle], private_redis: PrivateRedis
) -> None:
    client, handle = setup
    worker = await handle.start()
    first = (await enqueue(client, "add", kwargs={"a": 1})).json()["job_id"]
    await wait_for(client, first)
    private_redis.stop()
    await asyncio.sleep(1.5)
    private_redis.start()  # empty: it keeps nothing on disk
    second = (await enqueue(client, "add", kwargs={"a": 2})).json()["job_id"]
    assert (await wait_for(client, second, timeout=30))["result"] == {"sum": 2}
    assert handle.task is not None and not handle.task.done()
    assert worker.jobs_complete == 2
