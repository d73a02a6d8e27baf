"""Reads and writes of the job history table. Callers own the transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Table, and_, bindparam, delete, func, select, true, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from src.arq.models import JobRecord
from src.arq.outcome import Outcome
from src.arq.schemas import FINISHED_STATUSES, JobStatus
from src.database import JSONType, UTCDateTime


async def get(session: AsyncSession, job_id: str) -> JobRecord | None:
    return await session.get(JobRecord, job_id, populate_existing=True)


async def existing_ids(session: AsyncSession, job_ids: Iterable[str]) -> dict[str, str]:
    """Those of `job_ids` that are taken, with their owners."""
    ids = list(job_ids)
    if not ids:
        return {}
    rows = await session.execute(
        select(JobRecord.job_id, JobRecord.owner).where(JobRecord.job_id.in_(ids))
    )
    return {job_id: owner for job_id, owner in rows}


async def insert_new(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert the jobs whose ids are free, in one statement; the ids inserted."""
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = (
        insert(JobRecord)
        .values(list(rows))
        .on_conflict_do_nothing(index_elements=[JobRecord.job_id])
        .returning(JobRecord.job_id)
    )
    return set((await session.scalars(statement)).all())


async def remove(session: AsyncSession, job_ids: Iterable[str]) -> None:
    await session.execute(delete(JobRecord).where(JobRecord.job_id.in_(list(job_ids))))


_FINISHED_VALUES = [s.value for s in FINISHED_STATUSES]
_NOT_FINISHED = JobRecord.status.not_in(_FINISHED_VALUES)
# Asked for a completion webhook that is not queued yet (the model's partial index).
_NOTIFY_PENDING = and_(JobRecord.notify_url.is_not(None), JobRecord.notification_job_id.is_(None))


async def mark_finished(
    session: AsyncSession,
    job_id: str,
    *,
    status: JobStatus,
    at: datetime,
    tries: int | None = None,
    started_at: datetime | None = None,
    result: Any = None,
    error: dict[str, str] | None = None,
) -> bool:
    """Record the end of a job once; a finished job is never rewritten. True if this call did it."""
    values: dict[str, Any] = {
        "status": status.value,
        "finished_at": at,
        "result": result,
        "error": error,
    }
    if status is JobStatus.COMPLETE:
        values["progress"] = 100
    else:
        values["message"] = None  # a "retrying in 1.3 s" note must not outlive the retries
    if tries is not None:
        values["tries"] = tries
    if started_at is not None:
        values["started_at"] = started_at  # ARQ's own start time is the exact one
    outcome = await session.execute(
        update(JobRecord).where(JobRecord.job_id == job_id, _NOT_FINISHED).values(**values)
    )
    return bool(getattr(outcome, "rowcount", 0))


async def request_abort(session: AsyncSession, job_id: str, *, by: str, at: datetime) -> None:
    await session.execute(
        update(JobRecord)
        .where(JobRecord.job_id == job_id, _NOT_FINISHED)
        .values(abort_requested_by=by, abort_requested_at=at)
    )


async def set_progress(
    session: AsyncSession, job_id: str, percent: int, message: str | None
) -> None:
    await session.execute(
        update(JobRecord)
        .where(JobRecord.job_id == job_id, _NOT_FINISHED)
        .values(progress=percent, message=message)
    )


async def page(
    session: AsyncSession,
    *,
    owner: str | None,
    status: JobStatus | None,
    function: str | None,
    limit: int,
    offset: int,
) -> tuple[list[JobRecord], int]:
    """Jobs newest first, with the total matching the filters."""
    conditions = []
    if owner is not None:
        conditions.append(JobRecord.owner == owner)
    if status is not None:
        conditions.append(JobRecord.status == status.value)
    if function is not None:
        conditions.append(JobRecord.function == function)
    where = and_(*conditions) if conditions else true()
    total = await session.scalar(select(func.count()).select_from(JobRecord).where(where))
    rows = await session.scalars(
        select(JobRecord)
        .where(where)
        .order_by(JobRecord.enqueued_at.desc(), JobRecord.job_id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows), int(total or 0)


async def active_by_function(session: AsyncSession) -> dict[str, int]:
    """Counts of not-finished jobs per task."""
    rows = await session.execute(
        select(JobRecord.function, func.count()).where(_NOT_FINISHED).group_by(JobRecord.function)
    )
    return {name: int(count) for name, count in rows}


async def finished_since(session: AsyncSession, since: datetime) -> dict[JobStatus, int]:
    rows = await session.execute(
        select(JobRecord.status, func.count())
        .where(JobRecord.finished_at >= since)
        .group_by(JobRecord.status)
    )
    return {JobStatus(status): int(count) for status, count in rows}


async def active_page(
    session: AsyncSession, *, after: str, limit: int, enqueued_before: datetime
) -> list[JobRecord]:
    """Not-finished jobs, by id, for walking the whole set in pages."""
    rows = await session.scalars(
        select(JobRecord)
        .where(_NOT_FINISHED, JobRecord.enqueued_at < enqueued_before, JobRecord.job_id > after)
        .order_by(JobRecord.job_id)
        .limit(limit)
    )
    return list(rows)


async def requeue(
    session: AsyncSession, job_id: str, *, at: datetime, attempt: dict[str, Any]
) -> bool:
    """Put a finished job back in line as a new round, keeping the last round in `attempts`."""
    record = await session.get(JobRecord, job_id, with_for_update=True, populate_existing=True)
    if record is None or record.status not in (JobStatus.FAILED.value, JobStatus.ABORTED.value):
        return False
    record.attempts = [*(record.attempts or []), attempt]
    record.status = JobStatus.QUEUED.value
    record.tries = 0
    record.progress = 0
    record.message = None
    record.result = None
    record.error = None
    record.started_at = None
    record.finished_at = None
    record.abort_requested_by = None
    record.abort_requested_at = None
    record.scheduled_for = at
    record.notification_job_id = None  # the new round's ending gets its own webhook
    await session.flush()
    return True


async def set_message(session: AsyncSession, job_id: str, message: str) -> None:
    await session.execute(
        update(JobRecord).where(JobRecord.job_id == job_id, _NOT_FINISHED).values(message=message)
    )


# -- batched writes of the workers (one statement for many jobs) ------------------------------

_jobs: Table = JobRecord.__table__  # type: ignore[assignment]
# Spelled out rather than NOT IN: executemany() refuses expanding IN parameters.
_STILL_OPEN = and_(*(_jobs.c.status != value for value in _FINISHED_VALUES))


async def _mark_open_many(
    session: AsyncSession, rows: Sequence[dict[str, Any]], *, status: JobStatus, at_column: str
) -> None:
    """Set `status`, `tries` and `at_column` per row on jobs not finished on record."""
    if not rows:
        return
    statement = (
        update(_jobs)
        .where(_jobs.c.job_id == bindparam("b_id"), _STILL_OPEN)
        .values(
            {"status": status.value, "tries": bindparam("b_tries"), at_column: bindparam("b_at")}
        )
    )
    await (await session.connection()).execute(statement, list(rows))


async def mark_started_many(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of `{b_id, b_tries, b_at}`: jobs a worker started at `b_at`."""
    await _mark_open_many(session, rows, status=JobStatus.IN_PROGRESS, at_column="started_at")


def finished_row(job_id: str, outcome: Outcome) -> dict[str, Any]:
    """A row for `mark_finished_many` from ARQ's record of the job's ending."""
    return {
        "b_id": job_id,
        "b_status": outcome.status.value,
        "b_at": outcome.finished_at,
        "b_tries": outcome.tries,
        "b_started": outcome.started_at,
        "b_result": outcome.result,
        "b_error": outcome.error,
    }


async def mark_finished_many(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Rows of `{b_id, b_status, b_at, b_tries, b_started, b_result, b_error}`; the ids whose
    ending this call recorded (a job already finished on record is left alone)."""
    if not rows:
        return []
    ids = [row["b_id"] for row in rows]
    already = set(
        await session.scalars(
            select(JobRecord.job_id).where(JobRecord.job_id.in_(ids), ~_NOT_FINISHED)
        )
    )
    complete = [row for row in rows if row["b_status"] == JobStatus.COMPLETE.value]
    other = [row for row in rows if row["b_status"] != JobStatus.COMPLETE.value]
    values: dict[str, Any] = {
        "status": bindparam("b_status"),
        "finished_at": bindparam("b_at"),
        "tries": func.coalesce(bindparam("b_tries", type_=Integer), _jobs.c.tries),
        "started_at": func.coalesce(bindparam("b_started", type_=UTCDateTime), _jobs.c.started_at),
        "result": bindparam("b_result", type_=JSONType),
        "error": bindparam("b_error", type_=JSONType),
    }
    connection = await session.connection()
    where = (_jobs.c.job_id == bindparam("b_id"), _STILL_OPEN)
    if complete:
        await connection.execute(
            update(_jobs).where(*where).values(**values, progress=100), complete
        )
    if other:
        # A failed or aborted job keeps no "try 2 of 3 failed, retrying" note.
        await connection.execute(update(_jobs).where(*where).values(**values, message=None), other)
    return [job_id for job_id in ids if job_id not in already]


async def mark_waiting_many(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of `{b_id, b_tries, b_at}`: jobs ARQ will run again (retrying) at `b_at`."""
    await _mark_open_many(session, rows, status=JobStatus.RETRYING, at_column="scheduled_for")


async def abort_and_priority(
    session: AsyncSession, job_ids: Sequence[str]
) -> dict[str, tuple[str | None, str, bool]]:
    """Who asked to abort each job (if anyone), its priority, and whether it wants a
    completion webhook it has not had yet."""
    if not job_ids:
        return {}
    rows = await session.execute(
        select(
            JobRecord.job_id,
            JobRecord.abort_requested_by,
            JobRecord.priority,
            _NOTIFY_PENDING,
        ).where(JobRecord.job_id.in_(list(job_ids)))
    )
    return {job_id: (by, priority, bool(notify)) for job_id, by, priority, notify in rows}


# -- completion webhooks ---------------------------------------------------------------------


async def pending_notifications(
    session: AsyncSession, *, job_ids: Sequence[str] | None, limit: int
) -> list[JobRecord]:
    """Finished jobs that asked for a completion webhook not yet queued (of `job_ids`, or
    any), oldest ending first."""
    query = select(JobRecord).where(_NOTIFY_PENDING, ~_NOT_FINISHED)
    if job_ids is not None:
        if not job_ids:
            return []
        query = query.where(JobRecord.job_id.in_(list(job_ids)))
    rows = await session.scalars(query.order_by(JobRecord.finished_at).limit(limit))
    return list(rows)


async def set_notification_jobs(session: AsyncSession, jobs: dict[str, str]) -> None:
    """Record `{job id: its send_notification job id}` where none is recorded yet."""
    if not jobs:
        return
    statement = (
        update(_jobs)
        .where(_jobs.c.job_id == bindparam("b_id"), _jobs.c.notification_job_id.is_(None))
        .values(notification_job_id=bindparam("b_notify"))
    )
    await (await session.connection()).execute(
        statement, [{"b_id": job_id, "b_notify": notify} for job_id, notify in jobs.items()]
    )
