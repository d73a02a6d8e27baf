"""The ARQ worker: `arq src.arq.worker.WorkerSettings` (add `--watch src` to reload on change).

The hooks keep the job history current: a job's start, its ending (read from the result ARQ has
just written) and the re-queue of a job that will run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

from arq.connections import RedisSettings
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from src.arq import history, keys
from src.arq.config import ArqSettings
from src.arq.registry import TaskRegistry
from src.arq.schemas import JobStatus
from src.arq.serialization import deserialize, serialize
from src.arq.service import WORKER_HEARTBEAT_SECONDS, ms_to_datetime, outcome_from_result
from src.arq.tasks import registry as default_registry
from src.config import Settings, get_settings, load
from src.database import create_engine, create_sessionmaker

logger = logging.getLogger("src.arq.worker")

_HISTORY_ERRORS = (SQLAlchemyError, OSError, TimeoutError)


def redis_settings(url: str, *, timeout: float) -> RedisSettings:
    """ARQ's connection settings from a URL, with timeouts so a dead Redis is noticed."""
    base = RedisSettings.from_dsn(url)
    base.conn_timeout = max(1, round(timeout))
    base.conn_retries = 5
    base.conn_retry_delay = 1
    return base


def worker_options(
    *,
    registry: TaskRegistry,
    settings: Settings,
    arq_settings: ArqSettings,
) -> dict[str, Any]:
    """Everything `arq.Worker` takes, for `WorkerSettings` and for tests' in-process workers."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        engine = create_engine(settings.database_url, timeout=settings.database_timeout)
        ctx["engine"] = engine
        ctx["sessionmaker"] = create_sessionmaker(engine)
        ctx["arq_settings"] = arq_settings
        ctx["worker_id"] = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        ctx["heartbeat"] = asyncio.create_task(_heartbeat(ctx))
        ctx["pending_records"] = set()
        logger.info("worker %s up, tasks: %s", ctx["worker_id"], ", ".join(registry.names()))

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        heartbeat: asyncio.Task[None] | None = ctx.get("heartbeat")
        if heartbeat is not None:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        pending: set[asyncio.Task[None]] = ctx.get("pending_records", set())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if "worker_id" in ctx:
            with contextlib.suppress(RedisError, OSError):
                await ctx["redis"].zrem(keys.workers_set(arq_settings.queue_name), ctx["worker_id"])
        if "engine" in ctx:
            await ctx["engine"].dispose()

    async def _heartbeat(ctx: dict[str, Any]) -> None:
        key = keys.workers_set(arq_settings.queue_name)
        while True:
            try:
                await ctx["redis"].zadd(key, {ctx["worker_id"]: int(time.time() * 1000)})
            except (RedisError, OSError):
                logger.warning("worker heartbeat failed", exc_info=True)
            await asyncio.sleep(WORKER_HEARTBEAT_SECONDS)

    def track(ctx: dict[str, Any], record: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a history write as its own task, which on_shutdown waits for."""
        task = asyncio.create_task(record)
        pending: set[asyncio.Task[None]] = ctx["pending_records"]
        pending.add(task)
        task.add_done_callback(pending.discard)
        return task

    async def record_start(
        ctx: dict[str, Any], job_id: str, job_try: int, started_at: datetime
    ) -> None:
        try:
            await ctx["redis"].zadd(
                keys.running_set(arq_settings.queue_name), {job_id: int(time.time() * 1000)}
            )
        except (RedisError, OSError):
            logger.warning("could not mark job %s running", job_id, exc_info=True)
        try:
            async with ctx["sessionmaker"].begin() as session:
                await history.mark_started(session, job_id, tries=job_try, at=started_at)
        except _HISTORY_ERRORS:
            logger.warning("could not record the start of job %s", job_id, exc_info=True)

    async def on_job_start(ctx: dict[str, Any]) -> None:
        # No await here: ARQ calls this hook outside its own error handling, so a SIGTERM landing
        # in it would crash the worker and strand the job. The record is written beside the job.
        started_at = ms_to_datetime(int(time.time() * 1000))
        ctx["start_recorded"] = track(
            ctx, record_start(ctx, ctx["job_id"], ctx["job_try"], started_at)
        )

    async def record_end(ctx: dict[str, Any]) -> None:
        job_id = ctx["job_id"]
        redis = ctx["redis"]
        started: asyncio.Task[None] | None = ctx.get("start_recorded")
        if started is not None:
            await started  # the ending must land after the start; the start never raises
        try:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.running_set(arq_settings.queue_name), job_id)
                pipe.get(keys.result_key_prefix + job_id)
                pipe.zscore(arq_settings.queue_name, job_id)
                _, raw_result, score = await pipe.execute()
        except (RedisError, OSError):
            logger.warning("could not read the ending of job %s", job_id, exc_info=True)
            return
        try:
            async with ctx["sessionmaker"].begin() as session:
                if raw_result:
                    record = await history.get(session, job_id)
                    outcome = outcome_from_result(deserialize(raw_result), record)
                    await history.mark_finished(
                        session,
                        job_id,
                        status=outcome.status,
                        at=outcome.finished_at,
                        tries=outcome.tries,
                        started_at=outcome.started_at,
                        result=outcome.result,
                        error=outcome.error,
                    )
                elif score is not None:
                    # No ending and still queued: ARQ will run it again (Retry or cancellation).
                    await history.mark_waiting(
                        session,
                        job_id,
                        status=JobStatus.RETRYING,
                        tries=ctx["job_try"],
                        scheduled_for=ms_to_datetime(score),
                    )
        except _HISTORY_ERRORS:
            logger.warning("could not record the ending of job %s", job_id, exc_info=True)

    async def after_job_end(ctx: dict[str, Any]) -> None:
        task = track(ctx, record_end(ctx))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # Only a worker shutdown cancels here, and the job has already ended: let the record
            # finish (on_shutdown waits for it) rather than crash the worker's close.
            logger.info(
                "worker stopping; the record of job %s finishes in the background", ctx["job_id"]
            )

    return {
        "functions": registry.functions(),
        "redis_settings": redis_settings(settings.redis_url, timeout=settings.redis_timeout),
        "queue_name": arq_settings.queue_name,
        "max_jobs": arq_settings.max_jobs,
        "job_timeout": arq_settings.job_timeout,
        "max_tries": arq_settings.max_tries,
        "poll_delay": arq_settings.poll_delay,
        "keep_result": arq_settings.keep_result,
        "burst": arq_settings.burst_mode,
        "health_check_interval": arq_settings.health_check_interval,
        "allow_abort_jobs": True,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "on_job_start": on_job_start,
        "after_job_end": after_job_end,
    }


def _settings_class() -> type:
    options = worker_options(
        registry=default_registry, settings=get_settings(), arq_settings=load(ArqSettings)
    )
    # `arq` reads the class `__dict__`, so the hooks stay plain functions there.
    return type("WorkerSettings", (), {"__doc__": __doc__, "__module__": __name__, **options})


WorkerSettings = _settings_class()
