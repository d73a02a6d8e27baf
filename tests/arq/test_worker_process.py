"""The worker as its own process, started the way operators start it: the `arq` CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from src.config import Settings
from tests.arq.helpers import enqueue, status, wait_for

ROOT = Path(__file__).resolve().parents[2]
ARQ = str(Path(sys.executable).with_name("arq"))


def worker_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "DATABASE_URL": settings.database_url,
        "ARQ_POLL_DELAY": "0.05",
        "ARQ_HEALTH_CHECK_INTERVAL": "1",
        "ARQ_JOB_TIMEOUT": "600",
        "ENVIRONMENT": "test",
    }


StartWorker = Callable[[], subprocess.Popen[bytes]]


@pytest.fixture
async def start_worker(settings: Settings) -> AsyncIterator[StartWorker]:
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [ARQ, "tests.worker_settings.WorkerSettings"],
            cwd=ROOT,
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


async def check(settings: Settings, target: str) -> int:
    process = await asyncio.create_subprocess_exec(
        ARQ,
        "--check",
        target,
        cwd=ROOT,
        env=worker_env(settings),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 20)


async def test_cli_worker_runs_jobs_and_reports_health(
    client: httpx.AsyncClient, settings: Settings, start_worker: StartWorker
) -> None:
    assert await check(settings, "src.arq.worker.WorkerSettings") == 1  # no worker yet
    start_worker()
    job_id = (await enqueue(client, "ping", kwargs={"message": "hi"})).json()["job_id"]
    done = await wait_for(client, job_id, timeout=20)
    assert done["status"] == "complete"
    assert done["result"]["message"] == "hi"
    assert done["result"]["pid"] != os.getpid()
    assert await check(settings, "src.arq.worker.WorkerSettings") == 0


async def test_sigterm_requeues_running_job_for_the_next_worker(
    client: httpx.AsyncClient, start_worker: StartWorker
) -> None:
    first = start_worker()
    job_id = (await enqueue(client, "sleep", kwargs={"seconds": 2})).json()["job_id"]
    await wait_for(client, job_id, ("in_progress",), timeout=20)
    first.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(first.wait, 20)
    assert code == 0, first.stderr.read().decode()[-3000:] if first.stderr else code
    waiting = await status(client, job_id)
    assert waiting["status"] == "retrying"
    assert waiting["tries"] == 1
    start_worker()
    done = await wait_for(client, job_id, timeout=20)
    assert done["status"] == "complete"
    assert done["tries"] == 2


async def test_sigkilled_workers_job_runs_again_on_another_within_30s(
    client: httpx.AsyncClient, start_worker: StartWorker, tmp_path: Path, settings: Settings
) -> None:
    """Default lease, and a long ARQ_JOB_TIMEOUT that plain ARQ would wait out (+10 s)."""
    log = tmp_path / "runs.log"
    doomed = start_worker()
    job_id = (await enqueue(client, "tick", kwargs={"log": str(log), "seconds": 1.5})).json()[
        "job_id"
    ]
    await wait_for(client, job_id, ("in_progress",), timeout=20)
    survivor = start_worker()
    await asyncio.sleep(0.5)  # the survivor is up and idle
    doomed.kill()
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
