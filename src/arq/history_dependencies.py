"""The job history's dependency rows (`arq_job_dependencies`): what a waiting job waits for.
Callers own the transaction (see `src.arq.service.dependencies` for how jobs are settled)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from src.arq.models import JobDependency, JobRecord
from src.arq.schemas import JobStatus


async def add_dependencies(
    session: AsyncSession, dependencies: Mapping[str, Sequence[str]]
) -> None:
    """Record that each job of `dependencies` waits for the jobs it maps to (in that order)."""
    rows = [
        {"job_id": job_id, "depends_on": depends_on, "position": position}
        for job_id, ids in dependencies.items()
        for position, depends_on in enumerate(ids)
    ]
    if rows:
        await (await session.connection()).execute(insert(JobDependency), rows)


@dataclass(frozen=True, slots=True)
class Dependency:
    job_id: str
    status: JobStatus | None  # None: no longer in the history (the cleanup deleted it)


async def dependencies_of(
    session: AsyncSession, job_ids: Sequence[str]
) -> dict[str, list[Dependency]]:
    """The jobs each of `job_ids` waits for, in the order given, with their statuses now."""
    if not job_ids:
        return {}
    rows = await session.execute(
        select(JobDependency.job_id, JobDependency.depends_on, JobRecord.status)
        .outerjoin(JobRecord, JobRecord.job_id == JobDependency.depends_on)
        .where(JobDependency.job_id.in_(list(job_ids)))
        .order_by(JobDependency.job_id, JobDependency.position)
    )
    found: dict[str, list[Dependency]] = {job_id: [] for job_id in job_ids}
    for job_id, depends_on, status in rows:
        found[job_id].append(Dependency(depends_on, JobStatus(status) if status else None))
    return found


async def waiting_dependents(session: AsyncSession, job_ids: Sequence[str]) -> list[str]:
    """The waiting jobs that depend on any of `job_ids`."""
    if not job_ids:
        return []
    rows = await session.scalars(
        select(JobDependency.job_id)
        .join(JobRecord, JobRecord.job_id == JobDependency.job_id)
        .where(
            JobDependency.depends_on.in_(list(job_ids)),
            JobRecord.status == JobStatus.WAITING.value,
        )
        .distinct()
    )
    return list(rows)


async def lock_waiting(session: AsyncSession, job_ids: Sequence[str]) -> list[JobRecord]:
    """Those of `job_ids` still waiting, locked until the commit (in one order, against
    deadlocks): two processes settling one job take turns, and the second finds it settled."""
    if not job_ids:
        return []
    rows = await session.scalars(
        select(JobRecord)
        .where(JobRecord.job_id.in_(list(job_ids)), JobRecord.status == JobStatus.WAITING.value)
        .order_by(JobRecord.job_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return list(rows)


async def waiting_page(session: AsyncSession, *, after: str, limit: int) -> list[str]:
    """Ids of waiting jobs, by id, for walking them all in pages."""
    rows = await session.scalars(
        select(JobRecord.job_id)
        .where(JobRecord.status == JobStatus.WAITING.value, JobRecord.job_id > after)
        .order_by(JobRecord.job_id)
        .limit(limit)
    )
    return list(rows)


async def forget_dependencies(session: AsyncSession, job_ids: list[str]) -> None:
    """Delete the dependency rows of jobs about to be deleted (PostgreSQL's foreign key
    cascades too; SQLite enforces none): an id used again must not inherit them."""
    await session.execute(delete(JobDependency).where(JobDependency.job_id.in_(job_ids)))
