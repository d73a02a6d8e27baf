"""Removal of old data: comments (with their analyses), finished job history and reports, in
batches."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq import history_shared
from src.arq.context import ProgressReporter as Progress
from src.comments import queries as comments
from src.reports import storage as reports


class DeleteBatch(Protocol):
    """One batch of a removal, in the caller's transaction: how many rows it removed (0: none
    is left)."""

    def __call__(
        self, session: AsyncSession, cutoff: datetime, *, limit: int
    ) -> Awaitable[int]: ...


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
    async with sessionmaker() as session:
        old_comments, analyses = await comments.count_older_than(session, cutoff)
        jobs = await history_shared.count_finished_before(session, cutoff)
        old_reports = await reports.count_older_than(session, cutoff)
    report: dict[str, Any] = {
        "dry_run": dry_run,
        "cutoff": cutoff.isoformat(),
        "comments": old_comments,
        "analyses": analyses,
        "jobs": jobs,
        "reports": old_reports,
    }
    if dry_run:
        return report
    removed = 0
    total = max(1, old_comments + jobs + old_reports)
    # Reports are whole files: fewer to a batch.
    batches: list[tuple[DeleteBatch, int]] = [
        (comments.delete_older_than, batch_size),
        (history_shared.delete_finished_before, batch_size),
        (reports.delete_older_than, max(1, batch_size // 50)),
    ]
    for delete_batch, limit in batches:
        while True:
            async with sessionmaker.begin() as session:
                count = await delete_batch(session, cutoff, limit=limit)
            if not count:
                break
            removed += count
            if progress is not None:
                await progress(100 * removed / total, f"{removed} of {total} rows removed")
    return report
