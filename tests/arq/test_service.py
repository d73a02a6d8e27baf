"""The Python API (`ArqService`) and the no-pickle guarantee, against real Redis and PostgreSQL."""

from __future__ import annotations

import importlib
import json
import pathlib
import time
from datetime import timedelta
from typing import Any

import pytest
import redis as sync_redis
from arq.worker import Worker

from src.arq.config import ArqSettings
from src.arq.exceptions import (
    InvalidJobArguments,
    JobConflict,
    JobNotFound,
    TaskForbidden,
    UnknownTask,
)
from src.arq.queue import JobQueue
from src.arq.schemas import JobResultResponse, JobStatus, Priority
from src.arq.service import ArqService, open_arq_service
from src.auth.schemas import Principal, Role
from src.config import Settings

ALICE = Principal(owner="alice", role=Role.USER)
BOB = Principal(owner="bob", role=Role.USER)


async def wait_done(service: ArqService, job_id: str) -> JobResultResponse:
    import asyncio

    for _ in range(300):
        outcome = await service.get_job_result(job_id)
        if isinstance(outcome, JobResultResponse):
            return outcome
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish")


async def test_python_api_round_trip(service: ArqService, worker: Worker) -> None:
    queued = await service.enqueue_job("add", 40, b=2)
    assert queued.status is JobStatus.QUEUED
    done = await wait_done(service, queued.job_id)
    assert done.success is True
    assert done.result == {"sum": 42}
    status = await service.get_job_status(queued.job_id)
    assert status.status is JobStatus.COMPLETE
    listing = await service.list_jobs(principal=Principal(owner="system", role=Role.ADMIN))
    assert [job.owner for job in listing.items] == ["system"]


async def test_python_api_validates_like_rest(service: ArqService) -> None:
    with pytest.raises(UnknownTask):
        await service.enqueue_job("nope")
    with pytest.raises(InvalidJobArguments) as info:
        await service.enqueue_job("add", a="many")
    assert info.value.extra["errors"][0]["loc"][-1] == "a"
    with pytest.raises(TaskForbidden):
        await service.enqueue_job("admin_only", _principal=ALICE)
    first = await service.enqueue_job("add", a=1, _job_id="py-1", _defer_by=timedelta(minutes=5))
    assert first.status is JobStatus.DEFERRED
    with pytest.raises(JobConflict):
        await service.enqueue_job("add", a=1, _job_id="py-1")


async def test_python_api_ownership(service: ArqService) -> None:
    job = await service.enqueue_job("add", a=1, _principal=ALICE)
    assert (await service.get_job_status(job.job_id, principal=ALICE)).job_id == job.job_id
    with pytest.raises(JobNotFound):
        await service.get_job_status(job.job_id, principal=BOB)
    with pytest.raises(JobNotFound):
        await service.abort_job(job.job_id, principal=BOB)
    aborted = await service.abort_job(job.job_id, principal=ALICE)
    assert aborted.status is JobStatus.ABORTED


async def test_jobs_and_results_in_redis_are_json_not_pickle(
    service: ArqService, worker: Worker, redis_db: sync_redis.Redis
) -> None:
    deferred = await service.enqueue_job("add", a=1, _defer_by=600)
    payload = redis_db.get(f"arq:job:{deferred.job_id}")
    assert payload is not None
    assert json.loads(payload) == {
        "t": None,
        "f": "add",
        "a": [],
        "k": {"a": 1, "b": 0},
        "et": json.loads(payload)["et"],
        # The module's own keys (ARQ ignores them): whose job it is, when it is due and at what
        # priority, for the worker's log lines.
        "owner": "system",
        "ready_ms": json.loads(payload)["ready_ms"],
        "priority": "normal",
    }
    assert abs(json.loads(payload)["ready_ms"] - json.loads(payload)["et"] - 600_000) < 1000
    failing = await service.enqueue_job("fail", message="bad input")
    await wait_done(service, failing.job_id)
    raw = redis_db.get(f"arq:result:{failing.job_id}")
    assert raw is not None
    result = json.loads(raw)
    assert result["s"] is False
    assert result["r"]["type"] == "ValueError" and result["r"]["message"] == "bad input"


def test_no_module_imports_pickle() -> None:
    src = pathlib.Path(__file__).resolve().parents[2] / "src"
    offenders = [
        str(path)
        for path in src.rglob("*.py")
        if "import pickle" in path.read_text() or "from pickle" in path.read_text()
    ]
    assert offenders == []


def test_import_arq_is_the_library() -> None:
    arq = importlib.import_module("arq")
    assert hasattr(arq, "create_pool") and hasattr(arq, "Worker")
    assert "site-packages" in (arq.__file__ or "")
    job_module = importlib.import_module("src.arq")
    assert job_module.__file__ != arq.__file__


async def test_open_arq_service_for_scripts(
    settings: Settings, arq_settings: ArqSettings, worker: Worker
) -> None:
    async with open_arq_service(settings=settings, arq_settings=arq_settings) as arq_service:
        job = await arq_service.enqueue_job("ping", message="from a script")
        done = await wait_done(arq_service, job.job_id)
    assert done.result is not None
    assert done.result["message"] == "from a script"


async def test_python_api_priority_and_score_bounds(service: ArqService, redis: Any) -> None:
    jobs = {
        priority: await service.enqueue_job("add", a=1, _priority=priority)
        for priority in ("low", "normal", "high", "critical")
    }
    scores = {p: await redis.zscore("arq:queue", job.job_id) for p, job in jobs.items()}
    assert scores["critical"] < scores["high"] < scores["normal"] < scores["low"]
    # ARQ never runs a score of 0: even the largest aging keeps scores far above it.
    widest = JobQueue(redis, queue_name="q", aging_seconds=30 * 86400)
    now = int(time.time() * 1000)
    assert widest.score(Priority.CRITICAL, run_at_ms=now, now_ms=now) > 10**12
    for job in jobs.values():
        assert await redis.pttl(f"arq:job:{job.job_id}") > 86_400_000
    status = await service.get_job_status(jobs["critical"].job_id)
    assert status.priority is Priority.CRITICAL
