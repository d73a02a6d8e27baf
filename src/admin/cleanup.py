"""Removal of old data: comments (with their analyses), finished job history and reports, in
batches."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.admin.models import Report
from src.arq.models import JobRecord
from src.arq.schemas import FINISHED_STATUSES
from src.comments.models import Comment, CommentAnalysis

Progress = Callable[[float, str | None], Awaitable[None]]
_FINISHED = [status.value for status in FINISHED_STATUSES]


async def cleanup_old_data(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    older_than_days: int,
    dry_run: bool,
    batch_size: int = 5000,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Comments dated before the cut-off (and their analyses), jobs that finished before it and
    reports made before it.

    Jobs that have not finished are never removed. Each batch is its own transaction, so a
    long cleanup holds no lock for long and an interruption leaves consistent data.
    """
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    old_comments = Comment.date < cutoff
    old_jobs = (JobRecord.finished_at < cutoff) & JobRecord.status.in_(_FINISHED)
    old_reports = Report.created_at < cutoff
    async with sessionmaker() as session:
        comments = int(await session.scalar(select(func.count()).where(old_comments)) or 0)
        analyses = int(
            await session.scalar(
                select(func.count())
                .select_from(CommentAnalysis)
                .join(
                    Comment,
                    (Comment.owner_id == CommentAnalysis.owner_id)
                    & (Comment.comment_id == CommentAnalysis.comment_id),
                )
                .where(old_comments)
            )
            or 0
        )
        jobs = int(await session.scalar(select(func.count()).where(old_jobs)) or 0)
        reports = int(await session.scalar(select(func.count()).where(old_reports)) or 0)
    report: dict[str, Any] = {
        "dry_run": dry_run,
        "cutoff": cutoff.isoformat(),
        "comments": comments,
        "analyses": analyses,
        "jobs": jobs,
        "reports": reports,
    }
    if dry_run:
        return report
    removed = 0
    total = max(1, comments + jobs + reports)
    while True:
        async with sessionmaker.begin() as session:
            keys = (
                await session.execute(
                    select(Comment.owner_id, Comment.comment_id)
                    .where(old_comments)
                    .limit(batch_size)
                )
            ).all()
            if not keys:
                break
            pairs = [tuple(key) for key in keys]
            await session.execute(
                delete(CommentAnalysis).where(
                    tuple_(CommentAnalysis.owner_id, CommentAnalysis.comment_id).in_(pairs)
                )
            )
            await session.execute(
                delete(Comment).where(tuple_(Comment.owner_id, Comment.comment_id).in_(pairs))
            )
        removed += len(keys)
        if progress is not None:
            await progress(100 * removed / total, f"{removed} of {total} rows removed")
    # Reports are whole files: fewer to a batch.
    targets: list[tuple[type[JobRecord] | type[Report], Any, Any, int]] = [
        (JobRecord, JobRecord.job_id, old_jobs, batch_size),
        (Report, Report.id, old_reports, max(1, batch_size // 50)),
    ]
    for model, key, where, batch in targets:
        while True:
            async with sessionmaker.begin() as session:
                ids = list(await session.scalars(select(key).where(where).limit(batch)))
                if not ids:
                    break
                await session.execute(delete(model).where(key.in_(ids)))
            removed += len(ids)
            if progress is not None:
                await progress(100 * removed / total, f"{removed} of {total} rows removed")
    return report
