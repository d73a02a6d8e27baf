"""The rollup of the queue statistics (`arq_job_stats`, PostgreSQL only): per UTC hour, day and
month of enqueue time, per owner and task and over every owner, the jobs by status, retries,
and histograms of run time and queue wait (`src.arq.stats_measures`).

How it stays true: triggers on `arq_jobs` (migration 0011) append the enqueue hour of each job a
statement inserts, deletes or changes in what the statistics read to `arq_job_stats_dirty`, in
the writer's own transaction, locking nothing shared. A roll-up batch (the workers'
reconciliation runs them; one transaction each, one at a time by an advisory lock) takes some
dirty hours and recomputes their rows from the history, then, for the (owner, task) pairs whose
hour rows that changed, their days' rows from the hours' and their months' from the days':
recomputed from what they sum, never adjusted, so a late ending, a deleted job or a batch run
twice leaves the rows one batch over the final history would. A mark written after a batch took
its marks stays for the next one. A read takes the periods without a dirty hour from here and
the rest from the history, in one snapshot (`src.arq.stats_queries`): its counts are exact
whatever the roll-up's lag.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    BigInteger,
    Boolean,
    ColumnElement,
    Integer,
    Select,
    SQLColumnExpression,
    String,
    Table,
    and_,
    bindparam,
    cast,
    column,
    delete,
    false,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq.models import JobRecord, JobStatsDirtyHour, JobStatsRollup
from src.arq.schemas import JobStatus
from src.arq.stats_measures import bucket, run_seconds, wait_seconds
from src.arq.stats_window import Span, floor_period, period_spans
from src.database import UTCDateTime

# Dirty hours one roll-up batch recomputes (one transaction), and how long a workers' pass
# goes on with batches (a backlog, after the upgrade or a bulk change, takes a few passes).
HOURS_PER_BATCH = 48
PASS_SECONDS = 5.0
# pg_try_advisory_xact_lock key of the roll-up: b"arqstats".
LOCK_KEY = int.from_bytes(b"arqstats", "big")
# The rollup's count columns: jobs by status, then retries.
COUNTS = (*(status.value for status in JobStatus), "retried_jobs", "extra_tries")
HISTOGRAMS = ("run", "wait")
ARRAYS = tuple(f"{kind}_{part}" for kind in HISTOGRAMS for part in ("buckets", "counts"))
# A row's key after its grain, and the (owner, task) of a row (owner "" in the all-owners rows).
_KEY = ("all_owners", "owner", "period", "function")
_PAIR = ("all_owners", "owner", "function")
_INTS = ARRAY(Integer)
_rollup: Table = JobStatsRollup.__table__  # type: ignore[assignment]
_dirty: Table = JobStatsDirtyHour.__table__  # type: ignore[assignment]


# -- rows of the rollup's shape: key columns, COUNTS, ARRAYS -----------------------------------


def within(value: SQLColumnExpression[datetime], spans: Sequence[Span]) -> ColumnElement[bool]:
    """`value` in one of `spans`."""
    return or_(
        false(),
        *(
            value >= start if end is None else and_(value >= start, value < end)
            for start, end in spans
        ),
    )


def _assembled(parts: Sequence[Select[Any]], key: Sequence[str]) -> Select[Any]:
    """Rows of the rollup's shape from `parts`, each a select of the `key` columns, COUNTS,
    "kind" and "bucket" and "n": its count rows (kind "counts", null bucket and n) summed, and
    its pairs of each histogram (kind "run" or "wait", null COUNTS) gathered into the arrays;
    one GROUP BY, so no join depends on the planner's guess of how many groups there are."""
    each = union_all(*parts).subquery("parts")
    empty = literal_column("'{}'", _INTS)
    arrays = []
    for kind in HISTOGRAMS:
        ordered = each.c.bucket
        of_kind = each.c.kind == kind
        arrays += [
            func.coalesce(
                func.array_agg(aggregate_order_by(each.c.bucket, ordered), type_=_INTS).filter(
                    of_kind
                ),
                empty,
            ).label(f"{kind}_buckets"),
            func.coalesce(
                func.array_agg(
                    aggregate_order_by(cast(each.c.n, Integer), ordered), type_=_INTS
                ).filter(of_kind),
                empty,
            ).label(f"{kind}_counts"),
        ]
    keys = [each.c[name] for name in key]
    sums = (cast(func.coalesce(func.sum(each.c[name]), 0), Integer).label(name) for name in COUNTS)
    return select(*keys, *sums, *arrays).group_by(*keys)


def _no_counts() -> list[ColumnElement[Any]]:
    return [cast(null(), Integer).label(name) for name in COUNTS]


def history_jobs(conditions: Sequence[ColumnElement[bool]]) -> CTE:
    """The history rows matching `conditions`: their enqueue hour ("period"), owner, task,
    status, tries and histogram buckets ("run", "wait")."""
    hour = func.date_trunc("hour", JobRecord.enqueued_at, "UTC", type_=UTCDateTime)
    return (
        select(
            hour.label("period"),
            JobRecord.owner,
            JobRecord.function,
            JobRecord.status,
            JobRecord.tries,
            bucket(run_seconds()).label("run"),
            bucket(wait_seconds()).label("wait"),
        )
        .where(*conditions)
        .cte("jobs")
    )


def history_rows(jobs: CTE, key: Sequence[str]) -> Select[Any]:
    """Rows of the rollup's shape of `jobs` (`history_jobs`) grouped by `key` (of "period",
    "owner", "function")."""
    keys = [jobs.c[name] for name in key]
    retried = jobs.c.tries > 1
    counts = select(
        *keys,
        *(
            func.count().filter(jobs.c.status == status.value).label(status.value)
            for status in JobStatus
        ),
        func.count().filter(retried).label("retried_jobs"),
        func.coalesce(func.sum(jobs.c.tries - 1).filter(retried), 0).label("extra_tries"),
        literal("counts").label("kind"),
        cast(null(), Integer).label("bucket"),
        cast(null(), BigInteger).label("n"),
    ).group_by(*keys)
    pairs = [
        select(
            *keys,
            *_no_counts(),
            literal(kind).label("kind"),
            jobs.c[kind].label("bucket"),
            func.count().label("n"),
        )
        .where(jobs.c[kind].is_not(None))
        .group_by(*keys, jobs.c[kind])
        for kind in HISTOGRAMS
    ]
    return _assembled([counts, *pairs], key)


def merged_rows(source: CTE, key: Sequence[str]) -> Select[Any]:
    """The rows of `source` (of the rollup's shape) summed by `key`: counts added, histograms
    merged."""
    keys = [source.c[name] for name in key]
    counts = select(
        *keys,
        *(source.c[name] for name in COUNTS),
        literal("counts").label("kind"),
        cast(null(), Integer).label("bucket"),
        cast(null(), BigInteger).label("n"),
    )
    pairs = []
    for kind in HISTOGRAMS:
        each = (
            func.unnest(source.c[f"{kind}_buckets"], source.c[f"{kind}_counts"])
            .table_valued(column("bucket", Integer), column("n", Integer))
            .render_derived(with_types=False)
        )
        pairs.append(
            select(
                *keys,
                *_no_counts(),
                literal(kind).label("kind"),
                each.c.bucket,
                func.sum(each.c.n).label("n"),
            )
            .select_from(source)
            .join(each, true())
            .group_by(*keys, each.c.bucket)
        )
    return _assembled([counts, *pairs], key)


def rollup_rows(*conditions: ColumnElement[bool]) -> Select[Any]:
    """The rollup rows matching `conditions`, by function, in the shape `merged_rows` reads."""
    columns = (_rollup.c[name] for name in (*COUNTS, *ARRAYS))
    return select(_rollup.c.function, *columns).where(*conditions)


# -- the roll-up ---------------------------------------------------------------------------------


def _by_owner(rows: Select[Any], *, all_owners: bool) -> Select[Any]:
    """`rows` keyed by (period, owner, function), or by (period, function) for the all-owners
    rows, as rows keyed by `_KEY`."""
    each = rows.subquery()
    return select(
        literal(all_owners).label("all_owners"),
        literal("").label("owner") if all_owners else each.c.owner,
        each.c.period,
        each.c.function,
        *(each.c[name] for name in (*COUNTS, *ARRAYS)),
    )


async def _recompute_hours(
    session: AsyncSession, hours: Sequence[datetime]
) -> set[tuple[Any, ...]]:
    """Recompute the rows of `hours` from the history; the (all_owners, owner, function) whose
    rows changed (written, gone or different)."""
    row = (_rollup.c.period, *(_rollup.c[name] for name in (*_PAIR, *COUNTS, *ARRAYS)))
    gone = await session.execute(
        delete(_rollup)
        .where(_rollup.c.grain == "hour", _rollup.c.period.in_(list(hours)))
        .returning(*row)
    )
    before = {_hashable(values) for values in gone}
    jobs = history_jobs([within(JobRecord.enqueued_at, period_spans(hours, "hour"))])
    new = union_all(
        _by_owner(history_rows(jobs, ("period", "owner", "function")), all_owners=False),
        _by_owner(history_rows(jobs, ("period", "function")), all_owners=True),
    ).subquery("new")
    written = await session.execute(
        postgresql_insert(_rollup)
        .from_select(("grain", *_KEY, *COUNTS, *ARRAYS), select(literal("hour"), *new.c))
        .returning(*row)
    )
    after = {_hashable(values) for values in written}
    return {values[1:4] for values in before ^ after}


def _hashable(values: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(tuple(value) if isinstance(value, list) else value for value in values)


async def _recompute_coarser(
    session: AsyncSession,
    grain: str,
    periods: Sequence[datetime],
    pairs: set[tuple[Any, ...]],
    *,
    source_grain: str,
) -> None:
    """Recompute the rows of `periods` of `grain` of `pairs` from their `source_grain` rows."""
    columns = list(zip(*sorted(pairs), strict=True))
    chosen = (
        func.unnest(
            bindparam("all_owners", list(columns[0]), type_=ARRAY(Boolean)),
            bindparam("owners", list(columns[1]), type_=ARRAY(String)),
            bindparam("functions", list(columns[2]), type_=ARRAY(String)),
        )
        .table_valued("all_owners", "owner", "function")
        .render_derived(with_types=False)
    )
    of_pairs = tuple_(*(_rollup.c[name] for name in _PAIR)).in_(select(*chosen.c))
    await session.execute(
        delete(_rollup).where(
            _rollup.c.grain == grain, _rollup.c.period.in_(list(periods)), of_pairs
        )
    )
    period = func.date_trunc(grain, _rollup.c.period, "UTC", type_=UTCDateTime)
    source = (
        select(
            _rollup.c.all_owners,
            _rollup.c.owner,
            period.label("period"),
            _rollup.c.function,
            *(_rollup.c[name] for name in (*COUNTS, *ARRAYS)),
        )
        .where(
            _rollup.c.grain == source_grain,
            within(_rollup.c.period, period_spans(periods, grain)),
            of_pairs,
        )
        .cte("source")
    )
    rows = merged_rows(source, _KEY).subquery()
    await session.execute(
        postgresql_insert(_rollup).from_select(
            ("grain", *_KEY, *COUNTS, *ARRAYS), select(literal(grain), *rows.c)
        )
    )


async def roll_up_batch(session: AsyncSession, *, hours: int = HOURS_PER_BATCH) -> int | None:
    """Recompute up to `hours` dirty hours (the earliest), and their days and months where they
    changed, in the session's transaction; how many hours, or None when another roll-up holds
    the lock."""
    if not await session.scalar(select(func.pg_try_advisory_xact_lock(LOCK_KEY))):
        return None
    earliest = select(_dirty.c.hour).distinct().order_by(_dirty.c.hour).limit(hours)
    taken = await session.scalars(
        delete(_dirty).where(_dirty.c.hour.in_(earliest)).returning(_dirty.c.hour)
    )
    marked = sorted(set(taken))
    if not marked:
        return 0
    pairs = await _recompute_hours(session, marked)
    finer = marked
    for grain, source_grain in (("day", "hour"), ("month", "day")):
        if not pairs:
            break
        periods = sorted({floor_period(moment, grain) for moment in finer})
        await _recompute_coarser(session, grain, periods, pairs, source_grain=source_grain)
        finer = periods
    return len(marked)


async def roll_up(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    seconds: float | None = PASS_SECONDS,
    hours: int = HOURS_PER_BATCH,
) -> int:
    """Roll-up batches until no hour is dirty, another roll-up holds the lock, or `seconds`
    have passed (None: no limit); how many hours were recomputed. Nothing on SQLite."""
    started = time.monotonic()
    done = 0
    while seconds is None or time.monotonic() - started < seconds:
        async with sessionmaker.begin() as session:
            if session.get_bind().dialect.name != "postgresql":
                break
            batch = await roll_up_batch(session, hours=hours)
        if not batch:
            break
        done += batch
    return done


async def dirty_hours(session: AsyncSession, start: datetime, end: datetime) -> list[datetime]:
    """The dirty hours in `[start, end)`, sorted: one index probe each (a loose index scan),
    however many marks they have."""
    first = (
        select(_dirty.c.hour)
        .where(_dirty.c.hour >= start, _dirty.c.hour < end)
        .order_by(_dirty.c.hour)
        .limit(1)
        .cte("marked", recursive=True)
    )
    after = (
        select(_dirty.c.hour)
        .where(_dirty.c.hour > first.c.hour, _dirty.c.hour < end)
        .order_by(_dirty.c.hour)
        .limit(1)
        .scalar_subquery()
    )
    marked = first.union_all(select(after).where(first.c.hour.is_not(None)))
    return list(await session.scalars(select(marked.c.hour).where(marked.c.hour.is_not(None))))
