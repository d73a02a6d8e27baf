"""Queue statistics: what became of the jobs enqueued in a window, per task and in all.

Counts by status, success rate, run-time and wait percentiles and retries, from the history
table and its rollup (`src.arq.stats_queries`); a caller sees the statistics of its own jobs, an
admin those of everyone's or of one owner's. The workers keep the rollup up to date: its
roll-up is one of the sweeps of their reconciliation (`src.arq.stats_rollup`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from src.arq import stats_queries, stats_rollup
from src.arq.schemas import QueueStats
from src.arq.service.core import ServiceBase
from src.auth.schemas import Principal


class StatsMixin(ServiceBase):
    """Statistics of the jobs in the history."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sweeps.append(self.roll_up_stats)

    async def roll_up_stats(self) -> int:
        """Bring the statistics' rollup up to date with the history (a time-boxed pass); how
        many hours it recomputed."""
        return await stats_rollup.roll_up(self.sessionmaker)

    async def queue_stats(
        self,
        *,
        principal: Principal,
        since: datetime,
        until: datetime,
        function: str | None = None,
        owner: str | None = None,
    ) -> QueueStats:
        """Statistics of the jobs enqueued in `[since, until)` (of the task `function`, if
        given): the caller's own; an admin's: everyone's, or `owner`'s."""
        owner_filter = principal.owner_filter(owner)
        async with self.sessionmaker() as session:
            tasks, total = await stats_queries.job_stats(
                session, since=since, until=until, owner=owner_filter, function=function
            )
        return QueueStats(
            since=since,
            until=until,
            owner=owner_filter,
            function=function,
            tasks=tasks,
            total=total,
        )
