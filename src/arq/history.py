"""Reads and writes of the job history table. Callers own the transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    Table,
    and_,
    any_,
    bindparam,
    delete,
    func,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from src.arq.history_dependencies import forget_dependencies
from src.arq.models import JobRecord
from src.arq.schemas import FINISHED_STATUSES, JobStatus


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


_JOBS: Table = JobRecord.__table__  # type: ignore[assignment]
# One statement per dialect, its SQL compiled once (rows go as parameters, in batches).
_INSERT_NEW = {
    name: insert(_JOBS).on_conflict_do_nothing(index_elements=["job_id"]).returning(_JOBS.c.job_id)
    for name, insert in (("postgresql", postgresql_insert), ("sqlite", sqlite_insert))
}


async def insert_new(
    session: AsyncSession | AsyncConnection, rows: Sequence[dict[str, Any]]
) -> set[str]:
    """Insert the jobs whose ids are free; the ids inserted. Every row has the same keys. On a
    Core connection too (no ORM session to set up: a lone enqueue's insert is half as dear)."""
    if not rows:
        return set()
    dialect = (
        session.dialect if isinstance(session, AsyncConnection) else session.get_bind().dialect
    )
    statement = _INSERT_NEW[dialect.name]
    return set((await session.execute(statement, list(rows))).scalars().all())


async def remove(session: AsyncSession, job_ids: Iterable[str]) -> None:
    ids = list(job_ids)
    await forget_dependencies(session, ids)
    await session.execute(delete(JobRecord).where(JobRecord.job_id.in_(ids)))


def job_id_in(session: AsyncSession, values: Sequence[str]) -> ColumnElement[bool]:
    """The job's id is one of `values`. On PostgreSQL `= ANY(array)`: one statement however many
    values (an expanding IN is a new statement, compiled and prepared, for each list length;
    the workers' batches vary from 1 to 2 000 ids)."""
    if session.get_bind().dialect.name == "postgresql":
        return JobRecord.job_id == any_(bindparam("ids", list(values), type_=ARRAY(String)))
    return JobRecord.job_id.in_(list(values))


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
    only_while: JobStatus | None = None,
) -> bool:
    """Record the end of a job once; a finished job is never rewritten (nor, with `only_while`,
    one whose status is another). True if this call did it."""
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
    condition = _NOT_FINISHED if only_while is None else JobRecord.status == only_while.value
    outcome = await session.execute(
        update(JobRecord).where(JobRecord.job_id == job_id, condition).values(**values)
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
    since: datetime | None = None,
) -> tuple[list[JobRecord], int]:
    """Jobs newest first (enqueued from `since` on, if given), with the total matching."""
    conditions = [] if since is None else [JobRecord.enqueued_at >= since]
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
    """Not-finished jobs that belong in Redis (not those waiting for dependencies), by id, for
    walking the whole set in pages."""
    rows = await session.scalars(
        select(JobRecord)
        .where(
            _NOT_FINISHED,
            JobRecord.status != JobStatus.WAITING.value,
            JobRecord.enqueued_at < enqueued_before,
            JobRecord.job_id > after,
        )
        .order_by(JobRecord.job_id)
        .limit(limit)
    )
    return list(rows)


async def requeue(
    session: AsyncSession,
    job_id: str,
    *,
    at: datetime,
    attempt: dict[str, Any],
    status: JobStatus = JobStatus.QUEUED,
) -> bool:
    """Put a finished job back in line (`status`: queued, or waiting for its dependencies) as a
    new round, keeping the last round in `attempts`."""
    record = await session.get(JobRecord, job_id, with_for_update=True, populate_existing=True)
    if record is None or record.status not in (JobStatus.FAILED.value, JobStatus.ABORTED.value):
        return False
    record.attempts = [*(record.attempts or []), attempt]
    record.status = status.value
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


def owes_webhook(record: JobRecord) -> bool:
    """The job asked for a completion webhook that is not queued yet."""
    return record.notify_url is not None and record.notification_job_id is None


@dataclass(frozen=True, slots=True)
class JobFacts:
    """What a worker needs of a job's row to record its start or ending and announce it."""

    function: str
    owner: str
    priority: str
    aborted_by: str | None
    # It asked for a completion webhook that it has not had yet.
    notify: bool
    # When it was due: queued, or its deferral (or retry delay) ended.
    due_at: datetime


async def job_facts(session: AsyncSession, job_ids: Sequence[str]) -> dict[str, JobFacts]:
    """`JobFacts` of each of `job_ids` that has a row, the rows locked (in id order, so that
    writers of overlapping batches never deadlock) until the transaction ends."""
    if not job_ids:
        return {}
    rows = await session.execute(
        select(
            JobRecord.job_id,
            JobRecord.function,
            JobRecord.owner,
            JobRecord.priority,
            JobRecord.abort_requested_by,
            _NOTIFY_PENDING,
            JobRecord.enqueued_at,
            JobRecord.scheduled_for,
        )
        .where(job_id_in(session, job_ids))
        .order_by(JobRecord.job_id)
        .with_for_update()
    )
    facts: dict[str, JobFacts] = {}
    for job_id, function, owner, priority, by, notify, enqueued, scheduled in rows:
        facts[job_id] = JobFacts(
            function, owner, priority, by, bool(notify), max(enqueued, scheduled)
        )
    return facts


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
    """Record `{job id: the id of the follow-up job carrying its completion webhook}` where
    none is recorded yet."""
    if not jobs:
        return
    statement = (
        update(_JOBS)
        .where(_JOBS.c.job_id == bindparam("b_id"), _JOBS.c.notification_job_id.is_(None))
        .values(notification_job_id=bindparam("b_notify"))
    )
    await (await session.connection()).execute(
        statement, [{"b_id": job_id, "b_notify": notify} for job_id, notify in jobs.items()]
    )
