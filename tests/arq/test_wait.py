"""`ArqService.wait_for_result`: a Python API client waits for a job's ending without polling."""

from __future__ import annotations

import asyncio

import pytest

from src.arq.exceptions import JobNotFound
from src.arq.schemas import JobStatus
from src.arq.service import ArqService
from src.arq.worker import JobWorker
from src.auth.schemas import Principal, Role

ALICE = Principal(owner="alice", role=Role.USER)
BOB = Principal(owner="bob", role=Role.USER)


async def test_waits_for_the_result_of_a_job_a_worker_runs(
    service: ArqService, worker: JobWorker
) -> None:
    job = await service.enqueue_job("add", a=2, b=3, _principal=ALICE)
    async with asyncio.timeout(30):
        done = await service.wait_for_result(job.job_id, principal=ALICE)
    assert done.status is JobStatus.COMPLETE and done.result == {"sum": 5}
    # Waiting for a job that has ended answers at once.
    again = await service.wait_for_result(job.job_id, principal=ALICE)
    assert again.result == {"sum": 5}


async def test_a_failed_job_is_an_answer_too(service: ArqService, worker: JobWorker) -> None:
    job = await service.enqueue_job("fail", message="no", _principal=ALICE)
    async with asyncio.timeout(30):
        done = await service.wait_for_result(job.job_id, principal=ALICE)
    assert done.status is JobStatus.FAILED and done.error is not None


async def test_many_waiters_at_once(service: ArqService, worker: JobWorker) -> None:
    jobs = [await service.enqueue_job("add", a=i, _principal=ALICE) for i in range(40)]
    async with asyncio.timeout(60):
        results = await asyncio.gather(
            *(service.wait_for_result(job.job_id, principal=ALICE) for job in jobs)
        )
    assert [result.result for result in results] == [{"sum": i} for i in range(40)]


async def test_the_wait_is_bounded_by_the_caller(service: ArqService) -> None:
    """No worker runs: the caller's timeout ends the wait, and nothing is left subscribed."""
    job = await service.enqueue_job("add", a=1, _principal=ALICE)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await service.wait_for_result(job.job_id, principal=ALICE)
    channels = await service.redis.pubsub_channels()
    assert not [channel for channel in channels if job.job_id.encode() in channel]


async def test_another_users_job_is_not_found(service: ArqService) -> None:
    job = await service.enqueue_job("add", a=1, _principal=ALICE)
    with pytest.raises(JobNotFound):
        await service.wait_for_result(job.job_id, principal=BOB)


async def test_an_abort_while_waiting_ends_the_wait(service: ArqService) -> None:
    """No worker: the job waits far in the future, and is aborted while a client waits."""
    job = await service.enqueue_job("add", a=1, _defer_by=3600, _principal=ALICE)
    waiting = asyncio.create_task(service.wait_for_result(job.job_id, principal=ALICE))
    await asyncio.sleep(0.2)  # the waiter has subscribed and looked once
    assert not waiting.done()
    await service.abort_job(job.job_id, principal=ALICE)
    async with asyncio.timeout(10):
        done = await waiting
    assert done.status is JobStatus.ABORTED and done.success is False
