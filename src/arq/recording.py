"""Worker-side writes of the job history: starts, endings, re-queues, and change events."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq import history, keys
from src.arq.outcome import ms_to_datetime, now_ms, outcome_from_result
from src.arq.queue import JobQueue
from src.arq.schemas import JobStatus, Priority
from src.arq.serialization import deserialize

logger = logging.getLogger(__name__)

HISTORY_ERRORS = (SQLAlchemyError, OSError, TimeoutError)


async def announce(redis: Any, job_id: str) -> None:
    """Tell status streams that the job changed (best effort)."""
    try:
        await redis.publish(keys.job_events(job_id), b"1")
    except (RedisError, OSError):
        logger.debug("could not announce a change of job %s", job_id)


async def record_start(
    *,
    redis: Any,
    sessionmaker: async_sessionmaker[AsyncSession],
    queue_name: str,
    job_id: str,
    job_try: int,
    started_at: datetime,
) -> None:
    """A worker started the job; never raises."""
    try:
        await redis.zadd(keys.running_set(queue_name), {job_id: now_ms()})
    except (RedisError, OSError):
        logger.warning("could not mark job %s running", job_id, exc_info=True)
    try:
        async with sessionmaker.begin() as session:
            await history.mark_started(session, job_id, tries=job_try, at=started_at)
    except HISTORY_ERRORS:
        logger.warning("could not record the start of job %s", job_id, exc_info=True)
    await announce(redis, job_id)


async def record_end(
    *,
    queue: JobQueue,
    sessionmaker: async_sessionmaker[AsyncSession],
    job_id: str,
    job_try: int | None,
) -> None:
    """Record what ARQ did with the job: its ending, or its re-queue. Never raises."""
    redis = queue.redis
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keys.running_set(queue.queue_name), job_id)
            pipe.get(keys.result_key_prefix + job_id)
            pipe.zscore(queue.queue_name, job_id)
            _, raw_result, score = await pipe.execute()
    except (RedisError, OSError):
        logger.warning("could not read the ending of job %s", job_id, exc_info=True)
        return
    try:
        async with sessionmaker.begin() as session:
            record = await history.get(session, job_id)
            if raw_result:
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
            elif score is not None and job_try is not None:
                # No ending and still queued: ARQ will run it again (a retry or a cancellation).
                run_at = max(score, now_ms())
                await history.mark_waiting(
                    session,
                    job_id,
                    status=JobStatus.RETRYING,
                    tries=job_try,
                    scheduled_for=ms_to_datetime(run_at),
                )
                if record is not None and score > now_ms():
                    await queue.defer_priority(
                        job_id, run_at_ms=score, priority=Priority(record.priority)
                    )
    except HISTORY_ERRORS:
        logger.warning("could not record the ending of job %s", job_id, exc_info=True)
    except (RedisError, OSError):
        logger.warning("could not restore the priority of job %s", job_id, exc_info=True)
    await announce(redis, job_id)
