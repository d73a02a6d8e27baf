"""Reconcile the job history with Redis, so that no accepted job is lost.

A job on record as not finished must be somewhere in Redis: queued, running (holding a lease) or
finished (a result). When it is nowhere (Redis was unreachable when it was accepted, restarted
empty, or was flushed) it is queued again under the same id, once it has been missing for longer
than a lease: a live worker running it renews its lease well within that time, so a running job
is never started twice. When ARQ finished a job but the history missed the ending, the ending is
copied over. Finished jobs are never touched, and a job id is queued only if Redis holds nothing
for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq import history, keys
from src.arq.models import JobRecord
from src.arq.outcome import datetime_to_ms, now_ms, now_utc, outcome_from_result
from src.arq.queue import JobQueue, QueuedJob
from src.arq.recording import announce
from src.arq.schemas import Priority
from src.arq.serialization import deserialize

logger = logging.getLogger(__name__)

PAGE = 500


@dataclass
class ReconcileReport:
    checked: int = 0
    requeued: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    endings_copied: list[str] = field(default_factory=list)


async def reconcile(
    *,
    queue: JobQueue,
    sessionmaker: async_sessionmaker[AsyncSession],
    lease_seconds: float,
    grace_seconds: float = 5.0,
) -> ReconcileReport:
    """One pass over every not-finished job older than `grace_seconds`."""
    report = ReconcileReport()
    cutoff = now_utc() - timedelta(seconds=grace_seconds)
    after = ""
    while True:
        async with sessionmaker() as session:
            page = await history.active_page(
                session, after=after, limit=PAGE, enqueued_before=cutoff
            )
        if not page:
            break
        after = page[-1].job_id
        report.checked += len(page)
        await _reconcile_page(page, queue, sessionmaker, lease_seconds, grace_seconds, report)
    if report.requeued or report.restored or report.endings_copied:
        # Lost jobs are worth a warning; endings copied late are routine after a DB hiccup.
        level = logging.WARNING if report.requeued or report.restored else logging.INFO
        logger.log(
            level,
            "reconciled the job history with Redis: %d re-queued, %d restored to the queue, "
            "%d endings copied (of %d checked)",
            len(report.requeued),
            len(report.restored),
            len(report.endings_copied),
            report.checked,
        )
    return report


async def _reconcile_page(
    page: list[JobRecord],
    queue: JobQueue,
    sessionmaker: async_sessionmaker[AsyncSession],
    lease_seconds: float,
    grace_seconds: float,
    report: ReconcileReport,
) -> None:
    states = await queue.state([record.job_id for record in page])
    now = now_ms()
    missing_key = keys.missing_since(queue.queue_name)
    to_push: list[QueuedJob] = []
    endings: list[dict[str, Any]] = []
    running: list[str] = []
    for record, state in zip(page, states, strict=True):
        if state.raw_result:
            outcome = outcome_from_result(
                deserialize(state.raw_result), aborted_by=record.abort_requested_by
            )
            if now - datetime_to_ms(outcome.finished_at) < grace_seconds * 1000:
                continue  # just finished: its worker is writing the ending right now
            endings.append(history.finished_row(record.job_id, outcome))
        elif state.running:
            running.append(record.job_id)
        elif state.job_exists and state.score is not None:
            continue  # waiting in the queue
        elif state.job_exists:
            # The job is stored but not in the queue: put it back in line.
            score = queue.score(
                Priority(record.priority), datetime_to_ms(record.scheduled_for), now
            )
            await queue.redis.zadd(queue.queue_name, {record.job_id: score}, nx=True)
            report.restored.append(record.job_id)
        elif not await _missing_long_enough(queue, missing_key, record.job_id, now, lease_seconds):
            continue  # a live worker running it would renew its lease by then; look again later
        else:
            to_push.append(
                QueuedJob(
                    job_id=record.job_id,
                    function=record.function,
                    kwargs=record.args,
                    priority=Priority(record.priority),
                    run_at_ms=max(datetime_to_ms(record.scheduled_for), now),
                    enqueued_ms=datetime_to_ms(record.enqueued_at),
                    # ARQ keeps counting tries from here, so MAX_TRIES still bounds re-runs.
                    job_try=record.tries + 1 if record.tries else None,
                )
            )
    if running:
        await queue.redis.zrem(missing_key, *running)
    if endings:
        async with sessionmaker.begin() as session:
            copied = await history.mark_finished_many(session, endings)
        report.endings_copied.extend(copied)
        await announce(queue.redis, *copied)
    if to_push:
        pushed = await queue.push(to_push, now_ms=now)
        requeued = [job.job_id for job, ok in zip(to_push, pushed, strict=True) if ok]
        report.requeued.extend(requeued)
        if requeued:
            await queue.redis.zrem(missing_key, *requeued)


async def _missing_long_enough(
    queue: JobQueue, missing_key: str, job_id: str, now: int, lease_seconds: float
) -> bool:
    await queue.redis.zadd(missing_key, {job_id: now}, nx=True)
    first_seen = await queue.redis.zscore(missing_key, job_id)
    return first_seen is not None and now - first_seen > lease_seconds * 1000
