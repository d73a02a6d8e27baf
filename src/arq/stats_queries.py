"""Queue statistics from the job history: per task and over all tasks, of the jobs enqueued in a
window `[since, until)`.

PostgreSQL reads a window's whole UTC months, days and hours from the rollup
(`src.arq.stats_rollup`) and the rest (its edges, and hours whose jobs changed since the last
roll-up) from the history, in one snapshot: the counts are exact, the percentiles within
`stats_measures.PRECISION` (they come from the histograms). A window without a whole period in
the rollup is one statement over the history: counts with `FILTER`, exact percentiles with
`percentile_cont(...) WITHIN GROUP`, per task and, through `ROLLUP`, over all of them, read by
the covering indexes of migration 0009. Other databases (SQLite, the embedded default) stream
the window's rows and compute the same figures here, with the same linear interpolation.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    SQLColumnExpression,
    and_,
    func,
    literal,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import ARRAY

from src.arq import stats_measures, stats_rollup
from src.arq.models import JobRecord, JobStatsRollup
from src.arq.schemas import (
    FINISHED_STATUSES,
    DurationStats,
    JobStats,
    JobStatus,
    StatusCounts,
    TaskStats,
)
from src.arq.stats_window import WindowPlan, floor_period, plan_window

FRACTIONS = (0.5, 0.95, 0.99)

_FINISHED_VALUES = [status.value for status in FINISHED_STATUSES]


async def job_stats(
    session: AsyncSession,
    *,
    since: datetime,
    until: datetime,
    owner: str | None = None,
    function: str | None = None,
) -> tuple[list[TaskStats], JobStats]:
    """Statistics of the jobs enqueued in `[since, until)` (of `owner` and of the task
    `function`, when given): one per task with jobs, by name, and over all of them."""
    if session.get_bind().dialect.name != "postgresql":
        return await _in_python(session, window(since, until, owner=owner, function=function))
    if not session.in_transaction():
        # One snapshot for the dirty hours, the rollup and the history: a roll-up that commits
        # in between can neither hide a change nor count one twice.
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    statement, rolled_up = await postgresql_statement_for(
        session, since=since, until=until, owner=owner, function=function
    )
    if rolled_up:
        return await _with_rollup(session, statement)
    return await _in_postgresql(session, statement)


async def postgresql_statement_for(
    session: AsyncSession,
    *,
    since: datetime,
    until: datetime,
    owner: str | None,
    function: str | None,
) -> tuple[Select[Any], bool]:
    """The statement of the statistics on PostgreSQL, and whether it reads the rollup (a row
    per task of the rollup's shape) or the history alone (`postgresql_statement`)."""
    dirty = await stats_rollup.dirty_hours(
        session, floor_period(since, "hour"), floor_period(until, "hour")
    )
    plan = plan_window(since, until, dirty)
    if plan.periods:
        return rollup_statement(plan, owner=owner, function=function), True
    conditions = window(since, until, owner=owner, function=function)
    return postgresql_statement(conditions), False


def window(
    since: datetime,
    until: datetime | None,
    *,
    owner: str | None,
    function: str | None,
) -> list[ColumnElement[bool]]:
    """The history rows of the statistics: enqueued in `[since, until)` (None: no end), of
    `owner` and `function`."""
    conditions = [JobRecord.enqueued_at >= since]
    if until is not None:
        conditions.append(JobRecord.enqueued_at < until)
    return conditions + _filters(JobRecord.owner, JobRecord.function, owner, function)


def _filters(
    owner_column: SQLColumnExpression[str],
    function_column: SQLColumnExpression[str],
    owner: str | None,
    function: str | None,
) -> list[ColumnElement[bool]]:
    conditions = []
    if owner is not None:
        conditions.append(owner_column == owner)
    if function is not None:
        conditions.append(function_column == function)
    return conditions


# -- PostgreSQL, from the history alone: one statement, exact percentiles ----------------------


def _percentiles(value: ColumnElement[float]) -> ColumnElement[Any]:
    fractions = literal(list(FRACTIONS), ARRAY(Float))
    return type_coerce(func.percentile_cont(fractions).within_group(value), ARRAY(Float))


def postgresql_statement(conditions: Sequence[ColumnElement[bool]]) -> Select[Any]:
    """The statistics of the history rows matching `conditions`: a row per task, by name, and
    one over all (`all_tasks` true)."""
    # Each row's durations, null where there is none: ordered-set aggregates and count() skip
    # nulls, so the rows are read once, narrow, and no aggregate needs a FILTER of its own.
    jobs = (
        select(
            JobRecord.function,
            JobRecord.status,
            JobRecord.tries,
            stats_measures.run_seconds().label("run"),
            stats_measures.wait_seconds().label("wait"),
        )
        .where(*conditions)
        .subquery("jobs")
    )
    retried = jobs.c.tries > 1
    return (
        select(
            func.grouping(jobs.c.function).label("all_tasks"),
            jobs.c.function,
            *(
                func.count().filter(jobs.c.status == status.value).label(status.value)
                for status in JobStatus
            ),
            func.count().filter(retried).label("retried"),
            func.coalesce(func.sum(jobs.c.tries - 1).filter(retried), 0).label("extra"),
            func.count(jobs.c.run).label("ran"),
            _percentiles(jobs.c.run).label("run"),
            func.count(jobs.c.wait).label("waited"),
            _percentiles(jobs.c.wait).label("wait"),
        )
        .group_by(func.rollup(jobs.c.function))
        .order_by(jobs.c.function)
    )


async def _in_postgresql(
    session: AsyncSession, statement: Select[Any]
) -> tuple[list[TaskStats], JobStats]:
    tasks: list[TaskStats] = []
    total = _Figures().stats()  # ROLLUP always yields the total row; this is for the types
    for row in (await session.execute(statement)).mappings():
        counts = StatusCounts(**{status.value: int(row[status.value]) for status in JobStatus})
        figures = {
            "jobs": sum(counts.model_dump().values()),
            "statuses": counts,
            "success_rate": _success_rate(counts),
            "run_seconds": _durations(int(row["ran"]), row["run"]),
            "wait_seconds": _durations(int(row["waited"]), row["wait"]),
            "retried_jobs": int(row["retried"]),
            "extra_tries": int(row["extra"]),
        }
        if row["all_tasks"]:
            total = JobStats(**figures)
        else:
            tasks.append(TaskStats(function=row["function"], **figures))
    return tasks, total


def _durations(samples: int, values: Sequence[float | None] | None) -> DurationStats:
    p50, p95, p99 = values if values is not None and samples else (None, None, None)
    return DurationStats(samples=samples, p50=p50, p95=p95, p99=p99)


def _success_rate(counts: StatusCounts) -> float | None:
    finished = counts.complete + counts.failed + counts.aborted
    return counts.complete / finished if finished else None


# -- PostgreSQL, with the rollup: whole periods summed there, percentiles from histograms ------


def rollup_statement(plan: WindowPlan, *, owner: str | None, function: str | None) -> Select[Any]:
    """A row per task, by name, of the rollup's shape: the plan's periods of the rollup and
    its spans of the history, summed."""
    rollup = JobStatsRollup.__table__
    scope = [
        rollup.c.all_owners == (owner is None),
        rollup.c.owner == ("" if owner is None else owner),
        *_filters(rollup.c.owner, rollup.c.function, None, function),
        or_(
            *(
                and_(rollup.c.grain == grain, rollup.c.period.in_(periods))
                for grain, periods in plan.periods.items()
            )
        ),
    ]
    parts = [stats_rollup.rollup_rows(*scope)]
    if plan.history:
        spans = or_(
            *(and_(*window(start, end, owner=None, function=None)) for start, end in plan.history)
        )
        history = [spans, *_filters(JobRecord.owner, JobRecord.function, owner, function)]
        jobs = stats_rollup.history_jobs(history)
        parts.append(stats_rollup.history_rows(jobs, ("function",)))
    source = union_all(*parts).cte("source")
    statement = stats_rollup.merged_rows(source, ("function",))
    return statement.order_by(statement.selected_columns.function)


@dataclass
class _Summed:
    """A task's (or all tasks') counts and histograms."""

    counts: Counter[str] = field(default_factory=Counter)
    run: Counter[int] = field(default_factory=Counter)
    wait: Counter[int] = field(default_factory=Counter)

    def add(self, row: Mapping[str, Any]) -> None:
        self.counts.update({name: int(row[name]) for name in stats_rollup.COUNTS})
        self.run.update(dict(zip(row["run_buckets"], row["run_counts"], strict=True)))
        self.wait.update(dict(zip(row["wait_buckets"], row["wait_counts"], strict=True)))

    def stats(self) -> JobStats:
        counts = StatusCounts(**{status.value: self.counts[status.value] for status in JobStatus})
        return JobStats(
            jobs=sum(counts.model_dump().values()),
            statuses=counts,
            success_rate=_success_rate(counts),
            run_seconds=_estimated(self.run),
            wait_seconds=_estimated(self.wait),
            retried_jobs=self.counts["retried_jobs"],
            extra_tries=self.counts["extra_tries"],
        )


def _estimated(histogram: Counter[int]) -> DurationStats:
    samples = sum(histogram.values())
    return _durations(samples, stats_measures.histogram_percentiles(histogram, FRACTIONS))


async def _with_rollup(
    session: AsyncSession, statement: Select[Any]
) -> tuple[list[TaskStats], JobStats]:
    tasks: list[TaskStats] = []
    total = _Summed()
    for row in (await session.execute(statement)).mappings():
        task = _Summed()
        task.add(row)
        total.add(row)
        tasks.append(TaskStats(function=row["function"], **task.stats().model_dump()))
    return tasks, total.stats()


# -- other databases: the window's rows, computed here -----------------------------------------


def percentile_cont(ordered: Sequence[float], fraction: float) -> float | None:
    """PostgreSQL's `percentile_cont` of sorted values: linear interpolation between the two
    nearest ranks; None for no values."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = math.ceil(position)
    if lower == upper:
        return ordered[lower]
    return ordered[lower] + (position - lower) * (ordered[upper] - ordered[lower])


@dataclass
class _Figures:
    """The running figures of one task (or of all)."""

    statuses: dict[str, int] = field(default_factory=dict)
    retried: int = 0
    extra: int = 0
    runs: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    def add(
        self,
        status: str,
        tries: int,
        scheduled_for: datetime,
        started_at: datetime | None,
        finished_at: datetime | None,
        enqueued_at: datetime,
    ) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if tries > 1:
            self.retried += 1
            self.extra += tries - 1
        if started_at is None:
            return
        if finished_at is not None and status in _FINISHED_VALUES:
            self.runs.append((finished_at - started_at).total_seconds())
        if status != JobStatus.RETRYING.value:
            wait = (started_at - max(enqueued_at, scheduled_for)).total_seconds()
            self.waits.append(max(0.0, wait))

    def stats(self) -> JobStats:
        counts = StatusCounts(**self.statuses)
        return JobStats(
            jobs=sum(counts.model_dump().values()),
            statuses=counts,
            success_rate=_success_rate(counts),
            run_seconds=_durations_of(self.runs),
            wait_seconds=_durations_of(self.waits),
            retried_jobs=self.retried,
            extra_tries=self.extra,
        )


def _durations_of(values: list[float]) -> DurationStats:
    values.sort()
    p50, p95, p99 = (percentile_cont(values, fraction) for fraction in FRACTIONS)
    return DurationStats(samples=len(values), p50=p50, p95=p95, p99=p99)


async def _in_python(
    session: AsyncSession, conditions: Sequence[ColumnElement[bool]]
) -> tuple[list[TaskStats], JobStats]:
    per_task: dict[str, _Figures] = {}
    total = _Figures()
    rows = await session.stream(
        select(
            JobRecord.function,
            JobRecord.status,
            JobRecord.tries,
            JobRecord.scheduled_for,
            JobRecord.started_at,
            JobRecord.finished_at,
            JobRecord.enqueued_at,
        ).where(*conditions)
    )
    async for name, status, tries, scheduled_for, started_at, finished_at, enqueued_at in rows:
        for figures in (per_task.setdefault(name, _Figures()), total):
            figures.add(status, tries, scheduled_for, started_at, finished_at, enqueued_at)
    tasks = [
        TaskStats(function=name, **per_task[name].stats().model_dump()) for name in sorted(per_task)
    ]
    return tasks, total.stats()
