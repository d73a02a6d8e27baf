"""Stored reports: writing one, reading them back as their owner (or an admin) may, and
removing old ones."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from src.arq import history, history_shared
from src.arq.schemas import FINISHED_STATUSES, JobStatus
from src.auth.schemas import Principal
from src.reports.data import ReportData
from src.reports.exceptions import ReportNotFound, ReportNotReady
from src.reports.models import Report
from src.reports.render import RenderedReport
from src.reports.schemas import ReportFormat, ReportOut

# The owner of a job with no history row (not enqueued through the API): what the job module
# calls its own jobs (`src.arq.service.SYSTEM`); only admins see such reports.
SYSTEM_OWNER = "system"
REPORT_TASK = "generate_report"
JOB_STATUS_URL = "/api/v1/arq/status"
FINISHED = frozenset(status.value for status in FINISHED_STATUSES)


async def job_owner(session: AsyncSession, job_id: str) -> str:
    """Who enqueued the job (`SYSTEM_OWNER` if it has no history row)."""
    return (await history.existing_ids(session, [job_id])).get(job_id, SYSTEM_OWNER)


async def store_report(
    session: AsyncSession,
    *,
    report_id: str,
    owner: str,
    data: ReportData,
    rendered: RenderedReport,
    report_format: ReportFormat,
    params: dict[str, Any],
) -> Report:
    """Insert the report, or replace the one of the same id (a job run again)."""
    report = await session.merge(
        Report(
            id=report_id,
            owner=owner,
            group_id=data.group_id,
            format=report_format.value,
            params=params,
            content_type=rendered.content_type,
            filename=rendered.filename,
            size_bytes=len(rendered.content),
            content=rendered.content,
            summary=asdict(data.totals),
            created_at=data.generated_at,
        )
    )
    await session.flush()
    return report


async def get_report(session: AsyncSession, report_id: str, *, principal: Principal) -> Report:
    """The stored report, if it is the caller's (an admin's: anyone's); `ReportNotReady` while
    the caller's job that makes it has not finished."""
    report = await session.get(Report, report_id)
    if report is not None and principal.may_see(report.owner):
        return report
    if report is None:
        job = await history_shared.owner_and_status(session, report_id, function=REPORT_TASK)
        if job is not None and principal.may_see(job.owner):
            if job.status not in FINISHED:
                raise ReportNotReady(
                    report_id, status=job.status, status_url=f"{JOB_STATUS_URL}/{report_id}"
                )
            if job.status != JobStatus.COMPLETE:
                raise ReportNotFound(report_id, why=f": its job {job.status}")
    raise ReportNotFound(report_id)


async def list_reports(
    session: AsyncSession,
    *,
    principal: Principal,
    group_id: int | None = None,
    owner: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[ReportOut], int]:
    """The caller's reports (an admin's: everyone's, or `owner`'s), newest first, and how many
    in all."""
    owner = principal.owner_filter(owner)
    where = [] if owner is None else [Report.owner == owner]
    if group_id is not None:
        where.append(Report.group_id == group_id)
    columns = [column for column in Report.__table__.columns if column.name != "content"]
    rows = await session.execute(
        select(*columns)
        .where(*where)
        .order_by(Report.created_at.desc(), Report.id)
        .limit(limit)
        .offset(offset)
    )
    total = await session.scalar(select(func.count()).select_from(Report).where(*where))
    return [ReportOut.model_validate(row) for row in rows], int(total or 0)


async def count_older_than(session: AsyncSession, cutoff: datetime) -> int:
    """How many reports were made before `cutoff`."""
    return int(await session.scalar(select(func.count()).where(Report.created_at < cutoff)) or 0)


async def delete_older_than(session: AsyncSession, cutoff: datetime, *, limit: int) -> int:
    """Delete up to `limit` of the reports made before `cutoff`; how many were deleted (0: none
    is left)."""
    ids = list(
        await session.scalars(select(Report.id).where(Report.created_at < cutoff).limit(limit))
    )
    if ids:
        await session.execute(delete(Report).where(Report.id.in_(ids)))
    return len(ids)
