"""Counts of the job history that monitoring reads at scrape time (queue gauges).

Each is one indexed statement (`ix_arq_jobs_status_function` leads with the status), so a scrape
costs a few milliseconds however long the history is.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from src.arq.models import JobRecord
from src.arq.schemas import JobStatus

# History statuses of jobs that wait to run: ready now, or later (deferred, or between tries),
# or once their dependencies have completed (blocked).
WAITING = {
    JobStatus.WAITING: "blocked",
    JobStatus.QUEUED: "ready",
    JobStatus.DEFERRED: "deferred",
    JobStatus.RETRYING: "deferred",
}


async def waiting_by_priority(session: AsyncSession) -> dict[tuple[str, str], int]:
    """`{(state, priority): jobs}` of waiting jobs; state is "ready", "deferred" or "blocked"."""
    rows = await session.execute(
        select(JobRecord.status, JobRecord.priority, func.count())
        .where(JobRecord.status.in_([status.value for status in WAITING]))
        .group_by(JobRecord.status, JobRecord.priority)
    )
    counts: dict[tuple[str, str], int] = {}
    for status, priority, count in rows:
        key = (WAITING[JobStatus(status)], priority)
        counts[key] = counts.get(key, 0) + int(count)
    return counts


async def oldest_ready_since(session: AsyncSession) -> datetime | None:
    """When the longest-waiting ready job became due (None: no job is ready)."""
    return await session.scalar(
        select(func.min(JobRecord.scheduled_for)).where(JobRecord.status == JobStatus.QUEUED.value)
    )


async def count_with_status(session: AsyncSession, status: JobStatus) -> int:
    """Jobs with `status` (failed: the dead letters)."""
    count = await session.scalar(
        select(func.count()).select_from(JobRecord).where(JobRecord.status == status.value)
    )
    return int(count or 0)
