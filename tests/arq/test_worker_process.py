"""The worker as its own process, started the way operators start it: the `arq` CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import httpx
import pytest
import redis as sync_redis

from src.arq import keys
from src.arq.config import ArqSettings
from src.config import Settings
from tests.arq.helpers import enqueue, status, wait_for

ROOT = Path(__file__).resolve().parents[2]
ARQ = str(Path(sys.executable).with_name("arq"))


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a worker process. Run it with `cwd=` a scratch directory (not ROOT),
    so that a developer's ./.env cannot reach it; ROOT is on its path instead."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "REDIS_URL": settings.redis_url,
        "DATABASE_URL": settings.database_url,
        "ARQ_POLL_DELAY": "0.05",
        "ARQ_HEALTH_CHECK_INTERVAL": "1",
        "ARQ_JOB_TIMEOUT": "600",
        "ENVIRONMENT": "test",
    }


StartWorker = Callable[[], subprocess.Popen[bytes]]


async def wait_until_up(redis_db: sync_redis.Redis, process: subprocess.Popen[bytes]) -> None:
    """Until the worker process has sent its first heartbeat (it is up and polling)."""
    key = keys.workers_set(ArqSettings(_env_file=None).queue_name)
    deadline = asyncio.get_running_loop().time() + 45
    while not any(
        member.decode().split(":")[-2] == str(process.pid)
        for member in cast(list[bytes], redis_db.zrange(key, 0, -1))
    ):
        assert process.poll() is None, "the worker exited at start"
        assert asyncio.get_running_loop().time() < deadline, "the worker never came up"
        await asyncio.sleep(0.05)


@pytest.fixture
async def start_worker(settings: Settings, tmp_path: Path) -> AsyncIterator[StartWorker]:
    processes: list[subprocess.Popen[bytes]] = []
    scratch = tmp_path / "worker-cwd"
    scratch.mkdir()

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [ARQ, "tests.worker_settings.WorkerSettings"],
            cwd=scratch,
            env=worker_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        if process.stderr:
            process.stderr.close()


async def check(settings: Settings, target: str, cwd: Path) -> int:
    process = await asyncio.create_subprocess_exec(
        ARQ,
        "--check",
        target,
        cwd=cwd,
        env=worker_env(settings),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 20)


async def test_cli_worker_runs_jobs_and_reports_health(
    client: httpx.AsyncClient, settings: Settings, start_worker: StartWorker, tmp_path: Path
) -> None:
    assert await check(settings, "src.arq.worker.WorkerSettings", tmp_path) == 1  # no worker yet
    worker = start_worker()
    job_id = (await enqueue(client, "ping", kwargs={"message": "hi"})).json()["job_id"]
    done = await wait_for(client, job_id, timeout=20)
    assert done["status"] == "complete"
    assert done["result"]["message"] == "hi"
    assert done["result"]["pid"] != os.getpid()
    assert await check(settings, "src.arq.worker.WorkerSettings", tmp_path) == 0
    worker.terminate()  # SIGTERM: handled on the worker's own (uvloop) loop, a clean exit
    _, errors = await asyncio.to_thread(worker.communicate, timeout=20)
    assert worker.returncode == 0, errors.decode()
    assert "event loop: uvloop" in errors.decode()


async def test_sigterm_requeues_running_job_for_the_next_worker(
    client: httpx.AsyncClient, start_worker: StartWorker, tmp_path: Path
) -> None:
    first = start_worker()
    gate = tmp_path / "gate.open"  # the first run never ends by itself
    job_id = (await enqueue(client, "sleep", kwargs={"seconds": 0, "until": str(gate)})).json()[
        "job_id"
    ]
    # Not just claimed ("in_progress" comes with the claim) but running: it reported progress.
    while (current := await status(client, job_id))["message"] != "sleeping":
        assert current["status"] in ("queued", "in_progress"), current
        await asyncio.sleep(0.02)
    first.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(first.wait, 20)
    assert code == 0, first.stderr.read().decode()[-3000:] if first.stderr else code
    waiting = await status(client, job_id)
    assert waiting["status"] == "retrying"
    assert waiting["tries"] == 1
    gate.touch()
    start_worker()
    done = await wait_for(client, job_id, timeout=20)
    assert done["status"] == "complete"
    assert done["tries"] == 2


async def test_sigkilled_workers_job_runs_again_on_another_within_30s(
    client: httpx.AsyncClient,
    start_worker: StartWorker,
    tmp_path: Path,
    redis_db: sync_redis.Redis,
) -> None:
    """Default lease, and a long ARQ_JOB_TIMEOUT that plain ARQ would wait out (+10 s)."""
    log = tmp_path / "runs.log"
    gate = tmp_path / "gate.open"  # the job runs until this exists: first run never ends
    doomed = start_worker()
    job_id = (await enqueue(client, "tick", kwargs={"log": str(log), "until": str(gate)})).json()[
        "job_id"
    ]
    await wait_for(client, job_id, ("in_progress",), timeout=30)
    survivor = start_worker()
    await wait_until_up(redis_db, survivor)  # up and idle: the job is leased to the doomed one
    doomed.kill()
    await asyncio.to_thread(doomed.wait, 20)
    gate.touch()  # the next run may finish
    killed_at = asyncio.get_running_loop().time()
    seen = set()
    while True:
        current = await status(client, job_id)
        seen.add(current["status"])
        if current["status"] in ("complete", "failed", "aborted"):
            break
        assert asyncio.get_running_loop().time() - killed_at < 30, current
        await asyncio.sleep(0.1)
    assert current["status"] == "complete"
    assert current["tries"] == 2
    assert seen <= {"in_progress", "retrying", "complete"}
    assert [line.split() for line in log.read_text().splitlines()] == [
        [job_id, "1"],
        [job_id, "2"],
    ]
    assert survivor.poll() is None
