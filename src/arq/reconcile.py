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

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from arq.jobs import serialize_job
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq import history, history_writes, keys
from src.arq.events import EventKind, JobEvent, JobEvents
from src.arq.models import JobRecord
from src.arq.outcome import Outcome, datetime_to_ms, now_ms, now_utc, outcome_from_result
from src.arq.queue import JobQueue, QueuedJob
from src.arq.recording import HISTORY_ERRORS
from src.arq.schemas import FINISHED_STATUSES, JobStatus, Priority
from src.arq.serialization import as_error, deserialize, serialize

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
    events: JobEvents | None = None,
) -> ReconcileReport:
    """One pass over every not-finished job older than `grace_seconds`; what it records is
    published on `events`."""
    events = events or JobEvents(queue.redis)
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
            page,
            queue,
            sessionmaker,
            lease_seconds,
            grace_seconds,
            keep_result_seconds,
            report,
            events,
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
    events: JobEvents,
) -> None:
    states = await queue.state([record.job_id for record in page])
    by_id = {record.job_id: record for record in page}
    now = now_ms()
    missing_key = keys.missing_since(queue.queue_name)
    to_push: list[QueuedJob] = []
    endings: list[dict[str, Any]] = []
    outcomes: dict[str, Outcome] = {}
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
                endings.append(history_writes.finished_row(record.job_id, outcome))
                outcomes[record.job_id] = outcome
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
                    request_id=record.request_id,
                )
                serialize_job(job.function, (), job.kwargs, job.job_try, 0, serializer=serialize)
                to_push.append(job)
            # else: a live worker running it would renew its lease by then; look again later
        except (RedisError, OSError):
            raise  # Redis trouble ends the pass; the next one starts over
        except Exception as exc:  # one unreadable row must not stop the recovery of the others
            broken[record.job_id] = f"{type(exc).__name__}: {exc}"[:300]
    if broken:
        await _fail_broken(sessionmaker, broken, report, by_id, events)
    if running:
        await queue.redis.zrem(missing_key, *running)
    if endings:
        async with sessionmaker.begin() as session:
            copied = await history_writes.mark_finished_many(session, endings)
        report.endings_copied.extend(copied)
        await queue.expire_results(
            [row["b_id"] for row in endings], keep_ms=int(keep_result_seconds * 1000)
        )
        await events.publish(
            JobEvent.ending(
                job_id,
                outcomes[job_id],
                function=by_id[job_id].function,
                owner=by_id[job_id].owner,
                notify=history.owes_webhook(by_id[job_id]),
            )
            for job_id in copied
        )
    if to_push:
        pushed = await queue.push(to_push, now_ms=now)
        requeued = [job.job_id for job, ok in zip(to_push, pushed, strict=True) if ok]
        report.requeued.extend(requeued)
        if requeued:
            await queue.redis.zrem(missing_key, *requeued)
            await events.publish(
                JobEvent(
                    EventKind.ENQUEUED,
                    job_id,
                    by_id[job_id].function,
                    by_id[job_id].owner,
                    status=JobStatus.QUEUED,
                    lost=True,
                )
                for job_id in requeued
            )


async def _fail_broken(
    sessionmaker: async_sessionmaker[AsyncSession],
    broken: dict[str, str],
    report: ReconcileReport,
    by_id: dict[str, JobRecord],
    events: JobEvents,
) -> None:
    """End on record the jobs whose rows cannot be queued or read, saying why."""
    recorded: list[JobEvent] = []
    async with sessionmaker.begin() as session:
        for job_id, reason in broken.items():
            outcome = Outcome(
                status=JobStatus.FAILED,
                result=None,
                error={"type": "InvalidJob", "message": f"the job cannot be run: {reason}"},
                tries=None,
                started_at=None,
                finished_at=now_utc(),
            )
            if await history.mark_finished(
                session, job_id, status=outcome.status, at=outcome.finished_at, error=outcome.error
            ):
                record = by_id[job_id]
                recorded.append(
                    JobEvent.ending(
                        job_id,
                        outcome,
                        function=record.function,
                        owner=record.owner,
                        notify=history.owes_webhook(record),
                    )
                )
    report.skipped.extend(broken)
    await events.publish(recorded)


async def _missing_long_enough(
    queue: JobQueue, missing_key: str, job_id: str, now: int, lease_seconds: float
) -> bool:
    await queue.redis.zadd(missing_key, {job_id: now}, nx=True)
    first_seen = await queue.redis.zscore(missing_key, job_id)
    return first_seen is not None and now - first_seen > lease_seconds * 1000


async def lost_by_redis(
    sessionmaker: async_sessionmaker[AsyncSession] | None, job_id: str, result_data: bytes | None
) -> bool:
    """Whether ARQ's "job expired" means that Redis lost the job (an empty restart, a flush
    between the claim and the run): the module gives no job an expiry, so a job the
    history holds as not finished is lost, not failed; the reconciliation queues it again
    (and its tries go on from the history's count). Without a history (ARQ's own use), or
    for a job the history does not know, ARQ's ending stands."""
    if result_data is None or sessionmaker is None:
        return False
    try:
        error = as_error(deserialize(result_data).get("r"))
    except Exception:
        return False
    if error != {"type": "JobExecutionFailed", "message": "job expired"}:
        return False
    for attempt in range(3):
        try:
            async with sessionmaker() as session:
                record = await history.get(session, job_id)
            break
        except HISTORY_ERRORS:
            if attempt == 2:
                # Not failed on a guess: a job in the history is queued again from there.
                logger.warning("job %s: its data is gone from Redis; left to reconcile", job_id)
                return True
            await asyncio.sleep(0.5)
    if record is None or record.status in FINISHED_STATUSES:
        return False
    logger.warning(
        "job %s: its data is gone from Redis (restarted empty or flushed); it is queued "
        "again from the history",
        job_id,
    )
    return True
