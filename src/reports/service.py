"""Generating a report: collect the counts, render the file, store it under the job's id."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq.context import ProgressReporter
from src.morphology.analyzer import MorphAnalyzer
from src.reports.collect import collect_report
from src.reports.render import render
from src.reports.schemas import ReportFormat
from src.reports.storage import job_owner, store_report


async def generate_report(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    report_id: str,
    group_id: int | None,
    since: datetime | None = None,
    until: datetime | None = None,
    report_format: ReportFormat = ReportFormat.JSON,
    top_n: int = 20,
    params: dict[str, Any] | None = None,
    analyzer: MorphAnalyzer | None = None,
    progress: ProgressReporter | None = None,
) -> dict[str, Any]:
    """Collect, render and store the report of the job `report_id` (owned by its owner)."""
    async with sessionmaker() as session:
        owner = await job_owner(session, report_id)
        data = await collect_report(
            session,
            group_id=group_id,
            since=since,
            until=until,
            top_n=top_n,
            analyzer=analyzer,
            progress=progress,
        )
    if progress is not None:
        await progress(85, f"rendering {report_format.value}")
    rendered = render(data, report_format)
    if progress is not None:
        await progress(95, f"storing {len(rendered.content)} bytes")
    async with sessionmaker.begin() as session:
        await store_report(
            session,
            report_id=report_id,
            owner=owner,
            data=data,
            rendered=rendered,
            report_format=report_format,
            params=params or {},
        )
    return {
        "report_id": report_id,
        "group_id": group_id,
        "community_found": data.found,
        "format": report_format.value,
        "content_type": rendered.content_type,
        "filename": rendered.filename,
        "size_bytes": len(rendered.content),
        "totals": asdict(data.totals),
        "notes": data.notes,
    }
