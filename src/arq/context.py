"""What a task receives: the worker context, typed, with a per-job progress reporter."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypedDict, cast

from arq.connections import ArqRedis
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq import history
from src.arq.config import ArqSettings
from src.arq.recording import announce

logger = logging.getLogger(__name__)

ProgressReporter = Callable[[float, str | None], Awaitable[None]]
MessageReporter = Callable[[str], Awaitable[None]]


class WorkerContext(TypedDict):
    """Built once per worker process in `on_startup`."""

    redis: ArqRedis
    arq_settings: ArqSettings
    sessionmaker: async_sessionmaker[AsyncSession]
    worker_id: str


class JobContext(WorkerContext):
    """The worker context plus what ARQ adds for one job, and `progress`."""

    job_id: str
    job_try: int
    enqueue_time: datetime
    score: int
    progress: ProgressReporter
    report: MessageReporter


def bind_progress(ctx: dict[str, Any]) -> JobContext:
    """Add `progress(percent, message)` and `report(message)` for this job to its context
    (ARQ makes one context dict per job)."""
    job_id: str = ctx["job_id"]
    sessionmaker: async_sessionmaker[AsyncSession] = ctx["sessionmaker"]

    async def progress(percent: float, message: str | None = None) -> None:
        value = max(0, min(100, round(percent)))
        try:
            async with sessionmaker.begin() as session:
                await history.set_progress(session, job_id, value, message)
        except (SQLAlchemyError, OSError):
            # Progress is informative; losing one update must not fail the job.
            logger.warning("could not record progress of job %s", job_id, exc_info=True)
        await announce(ctx["redis"], job_id)

    async def report(message: str) -> None:
        try:
            async with sessionmaker.begin() as session:
                await history.set_message(session, job_id, message)
        except (SQLAlchemyError, OSError):
            logger.warning("could not record the message of job %s", job_id, exc_info=True)
        await announce(ctx["redis"], job_id)

    ctx["progress"] = progress
    ctx["report"] = report
    return cast(JobContext, ctx)
