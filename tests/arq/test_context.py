"""Typed resources of the worker context: provided by a domain's start-up hook, read by tasks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from arq.connections import ArqRedis
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq.config import ArqSettings
from src.arq.context import JobContext, MissingResource, Resource, WorkerContext, provide
from src.arq.registry import TaskRegistry
from src.arq.schemas import JobStatus
from src.arq.service import ArqService
from src.arq.worker import worker_options
from src.config import Settings
from tests.conftest import WorkerHandle

GREETING: Resource[str] = Resource("test_greeting")


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


def test_a_resource_is_read_with_its_type_or_named_when_missing() -> None:
    ctx: dict[str, Any] = {}
    with pytest.raises(MissingResource, match="'test_greeting'"):
        GREETING.get(ctx)
    assert GREETING.get(ctx, None) is None
    provide(ctx, GREETING, "hello")  # type: ignore[arg-type]  # a plain dict stands in
    assert GREETING.get(ctx) == "hello"


@pytest.mark.parametrize("name", ["redis", "sessionmaker", "job_id", "progress", "events"])
def test_a_resource_cannot_take_the_job_module_s_own_keys(name: str) -> None:
    with pytest.raises(ValueError, match="job module's own"):
        Resource(name)


async def run_greeter(
    registry: TaskRegistry,
    settings: Settings,
    arq_settings: ArqSettings,
    redis: ArqRedis,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> Any:
    service = ArqService(
        redis=redis, sessionmaker=sessionmaker, registry=registry, settings=arq_settings
    )
    handle = WorkerHandle(
        worker_options(registry=registry, settings=settings, arq_settings=arq_settings)
    )
    await handle.start()
    try:
        job = await service.enqueue_job("greet")
        deadline = time.monotonic() + 15
        while not (status := await service.get_job_status(job.job_id)).status.finished:
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.02)
    finally:
        await handle.stop()
    return status


def greeter(*, with_hook: bool) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task(args=NoArgs)
    async def greet(ctx: JobContext, args: NoArgs) -> str:
        return GREETING.get(ctx) + ", world"

    if with_hook:

        @registry.on_worker_startup
        async def open_greeting(ctx: WorkerContext) -> None:
            provide(ctx, GREETING, "hello")

    return registry


@pytest.mark.usefixtures("redis_db")
async def test_a_task_reads_what_its_package_s_hook_provided(
    settings: Settings,
    arq_settings: ArqSettings,
    redis: ArqRedis,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    status = await run_greeter(greeter(with_hook=True), settings, arq_settings, redis, sessionmaker)
    assert status.status is JobStatus.COMPLETE and status.result == "hello, world"


@pytest.mark.usefixtures("redis_db")
async def test_a_task_whose_resource_was_never_provided_fails_saying_which(
    settings: Settings,
    arq_settings: ArqSettings,
    redis: ArqRedis,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    status = await run_greeter(
        greeter(with_hook=False), settings, arq_settings, redis, sessionmaker
    )
    assert status.status is JobStatus.FAILED
    assert status.error is not None and status.error.type == "MissingResource"
    assert "test_greeting" in status.error.message
