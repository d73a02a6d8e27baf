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

from arq.jobs import serialize_job
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq import history, keys
from src.arq.models import JobRecord
from src.arq.outcome import datetime_to_ms, now_ms, now_utc, outcome_from_result
from src.arq.queue import JobQueue, QueuedJob
from src.arq.recording import announce
from src.arq.schemas import JobStatus, Priority
from src.arq.serialization import deserialize, serialize

logger = logging.getLogger(__name__)

PAGE = 500


@dataclass
class ReconcileReport:
    checked: int = 0
    requeued: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    endings_copied: list[str] = field(default_factory=list)
    # Rows that could not be handled (their job is failed on record, saying why).
    skipped: list[str] = field(default_factory=list)


async def reconcile(
    *,
    queue: JobQueue,
    sessionmaker: async_sessionmaker[AsyncSession],
    lease_seconds: float,
    grace_seconds: float = 5.0,
    keep_result_seconds: float = 3600,
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
        await _reconcile_page(
            page, queue, sessionmaker, lease_seconds, grace_seconds, keep_result_seconds, report
        )
    if report.skipped:
        logger.error(
            "reconciliation could not handle %d job(s); they are failed on record: %s",
            len(report.skipped),
            ", ".join(report.skipped[:20]),
        )
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
    keep_result_seconds: float,
    report: ReconcileReport,
) -> None:
    states = await queue.state([record.job_id for record in page])
    now = now_ms()
    missing_key = keys.missing_since(queue.queue_name)
    to_push: list[QueuedJob] = []
    endings: list[dict[str, Any]] = []
    running: list[str] = []
    broken: dict[str, str] = {}
    for record, state in zip(page, states, strict=True):
        try:
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
            elif await _missing_long_enough(queue, missing_key, record.job_id, now, lease_seconds):
                job = QueuedJob(
                    job_id=record.job_id,
                    function=record.function,
                    kwargs=record.args,
                    priority=Priority(record.priority),
                    run_at_ms=max(datetime_to_ms(record.scheduled_for), now),
                    enqueued_ms=datetime_to_ms(record.enqueued_at),
                    # ARQ keeps counting tries from here, so MAX_TRIES still bounds re-runs.
                    job_try=record.tries + 1 if record.tries else None,
                    owner=record.owner,
                )
                serialize_job(job.function, (), job.kwargs, job.job_try, 0, serializer=serialize)
                to_push.append(job)
            # else: a live worker running it would renew its lease by then; look again later
        except (RedisError, OSError):
            raise  # Redis trouble ends the pass; the next one starts over
        except Exception as exc:  # one unreadable row must not stop the recovery of the others
            broken[record.job_id] = f"{type(exc).__name__}: {exc}"[:300]
    if broken:
        await _fail_broken(sessionmaker, queue, broken, report)
    if running:
        await queue.redis.zrem(missing_key, *running)
    if endings:
        async with sessionmaker.begin() as session:
            copied = await history.mark_finished_many(session, endings)
        report.endings_copied.extend(copied)
        await queue.expire_results(
            [row["b_id"] for row in endings], keep_ms=int(keep_result_seconds * 1000)
        )
        await announce(queue.redis, *copied)
    if to_push:
        pushed = await queue.push(to_push, now_ms=now)
        requeued = [job.job_id for job, ok in zip(to_push, pushed, strict=True) if ok]
        report.requeued.extend(requeued)
        if requeued:
            await queue.redis.zrem(missing_key, *requeued)


async def _fail_broken(
    sessionmaker: async_sessionmaker[AsyncSession],
    queue: JobQueue,
    broken: dict[str, str],
    report: ReconcileReport,
) -> None:
    """End on record the jobs whose rows cannot be queued or read, saying why."""
    async with sessionmaker.begin() as session:
        for job_id, reason in broken.items():
            await history.mark_finished(
                session,
                job_id,
                status=JobStatus.FAILED,
                at=now_utc(),
                error={"type": "InvalidJob", "message": f"the job cannot be run: {reason}"},
            )
    report.skipped.extend(broken)
    await announce(queue.redis, *broken)


async def _missing_long_enough(
    queue: JobQueue, missing_key: str, job_id: str, now: int, lease_seconds: float
) -> bool:
    await queue.redis.zadd(missing_key, {job_id: now}, nx=True)
    first_seen = await queue.redis.zscore(missing_key, job_id)
    return first_seen is not None and now - first_seen > lease_seconds * 1000
