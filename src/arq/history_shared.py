"""What other packages read of job rows, and the cleanup's deletes: a report's or a
webhook's owner, parse jobs per community, finished jobs older than the retention. Callers own
the transaction."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from src.arq.history_dependencies import forget_dependencies
from src.arq.models import JobRecord
from src.arq.schemas import FINISHED_STATUSES

_FINISHED_VALUES = [s.value for s in FINISHED_STATUSES]


@dataclass(frozen=True, slots=True)
class JobOwnerStatus:
    owner: str
    status: str  # a `JobStatus` value


async def owner_and_status(
    session: AsyncSession, job_id: str, *, function: str
) -> JobOwnerStatus | None:
    """The owner and status of the job `job_id` of the task `function`, if it has a row."""
    row = (
        await session.execute(
            select(JobRecord.owner, JobRecord.status).where(
                JobRecord.job_id == job_id, JobRecord.function == function
            )
        )
    ).first()
    return JobOwnerStatus(row.owner, row.status) if row is not None else None


def _group_id(args: Any) -> int | None:
    """The `group_id` a job was given, if it names a community by id."""
    if not isinstance(args, Mapping):
        return None
    value = args.get("group_id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


async def counts_by_group_id(session: AsyncSession, *, function: str) -> dict[int, dict[str, int]]:
    """{community id: {status: count}} of the jobs of the task `function`, matched on a positive
    `args.group_id` in Python (JSON path operators differ between PostgreSQL's JSONB and
    SQLite)."""
    counts: defaultdict[int, Counter[str]] = defaultdict(Counter)
    rows = await session.stream(
        select(JobRecord.args, JobRecord.status).where(JobRecord.function == function)
    )
    async for args, status in rows:
        group_id = _group_id(args)
        if group_id is not None and group_id > 0:
            counts[group_id][status] += 1
    return {gid: dict(sorted(statuses.items())) for gid, statuses in counts.items()}


def _finished_before(cutoff: datetime) -> ColumnElement[bool]:
    return (JobRecord.finished_at < cutoff) & JobRecord.status.in_(_FINISHED_VALUES)


async def count_finished_before(session: AsyncSession, cutoff: datetime) -> int:
    """How many jobs finished before `cutoff` (jobs not finished are never counted)."""
    return int(await session.scalar(select(func.count()).where(_finished_before(cutoff))) or 0)


async def delete_finished_before(session: AsyncSession, cutoff: datetime, *, limit: int) -> int:
    """Delete up to `limit` jobs that finished before `cutoff` (never one not finished); how
    many were deleted (0: none is left)."""
    ids = list(
        await session.scalars(select(JobRecord.job_id).where(_finished_before(cutoff)).limit(limit))
    )
    if ids:
        await forget_dependencies(session, ids)
        await session.execute(delete(JobRecord).where(JobRecord.job_id.in_(ids)))
    return len(ids)
