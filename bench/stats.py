"""Queue statistics benchmark: the query of `GET /api/v1/arq/stats` over N job history rows.

Run it from the repository root: `python -m bench.stats --rows 1000000`; `--help` lists the
flags. It prints a table: `case | window | jobs in window | median ms | min ms | max ms`.

What it measures: `src.arq.stats_queries.job_stats`, what the stats endpoint runs (counts,
success rate, run-time and wait percentiles per task and over all tasks: the dirty hours, then
one statement over the rollup's whole periods and the history's rest, in one snapshot), on a
fresh connection pool, wall time from the call to the figures:

* an admin (every owner's jobs) over the last 24 hours, the last 30 days and all of them (the
  widest window the API allows, 366 days);
* one user (an owner's jobs) over the last 30 days and all of them;
* the same 30 days and year, ending 7 h 13 min 21.5 s earlier: windows whose ends fall inside
  hours (read from the history) and whose first and last days are partial (their hours read
  from the rollup's hours).

Each case runs once untimed (to warm the caches), then `--repeat` times; the table shows the
median, the fastest and the slowest of those. The target is under 200 ms at 1 000 000 rows.
`--explain` also prints each case's `EXPLAIN (ANALYZE, BUFFERS)` on stderr.

The data (seeded, not measured; its time is printed): `--rows` jobs enqueued at random over
`--days` days up to 2026-01-01, of 8 tasks and `--owners` owners, mostly complete (some failed,
aborted, retried, deferred, still queued or running), with waits and run times drawn per task,
copied in with COPY and then `VACUUM (ANALYZE)` (as autovacuum would leave a settled table).
Then the rollup is brought up to date (the workers' roll-up, run until no hour is dirty; its time
is printed, not measured) unless `--no-rollup`, which leaves every hour dirty, so the statistics
read the history alone as before the rollup. The bench also times one roll-up pass after the
newest job changed (what a worker's reconciliation pass does while jobs come and go: recompute
an hour, and that hour's day and month for the (owner, task) that changed).

Isolation, as in `bench.queue` and `bench.memory`: a PostgreSQL database `vkp_bench_<random>` is
created on the `--database-url` server, migrated, and dropped at the end, error or not.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import make_url, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench._common import (
    BenchError,
    Failed,
    add_database_server_argument,
    fresh_database,
    note,
    positive_int,
    redacted,
    run_main,
    text_table,
)
from bench.stats_data import END, TASKS, owner_name, seed, vacuum
from src.arq import stats_queries, stats_rollup
from src.arq.schemas import STATS_MAX_DAYS, JobStats
from src.database import create_engine, create_sessionmaker

# The shift of the windows whose ends fall inside hours.
MID_HOUR = timedelta(hours=7, minutes=13, seconds=21.5)
TABLE_HEADERS = ("case", "window", "jobs in window", "median ms", "min ms", "max ms")


@dataclass(frozen=True)
class Options:
    rows: int
    days: int
    owners: int
    repeat: int
    seed: int
    explain: bool
    rollup: bool
    database_url: str


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stats",
        description="Milliseconds of the queue statistics query (GET /api/v1/arq/stats) over "
        "N job history rows, on a seeded PostgreSQL database of its own.",
    )
    parser.add_argument(
        "--rows", type=positive_int, default=1_000_000, help="job history rows (1000000)"
    )
    parser.add_argument(
        "--days",
        type=positive_int,
        default=365,
        help=f"days the jobs are spread over, up to 2026-01-01 (365; at most {STATS_MAX_DAYS})",
    )
    parser.add_argument("--owners", type=positive_int, default=20, help="owners of the jobs (20)")
    parser.add_argument(
        "--repeat", type=positive_int, default=5, help="timed runs of each case (5)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the data (1)")
    parser.add_argument(
        "--explain", action="store_true", help="print each case's query plan on stderr"
    )
    parser.add_argument(
        "--no-rollup",
        action="store_true",
        help="leave the rollup empty: the statistics read the history alone",
    )
    add_database_server_argument(parser)
    args = parser.parse_args(argv)
    if args.days > STATS_MAX_DAYS:
        parser.error(f"--days: at most {STATS_MAX_DAYS} (the widest window of the API)")
    if not args.database_url.startswith("postgres"):
        parser.error("--database-url: give a PostgreSQL server URL (the data is seeded by COPY)")
    return Options(
        rows=args.rows,
        days=args.days,
        owners=args.owners,
        repeat=args.repeat,
        seed=args.seed,
        explain=args.explain,
        rollup=not args.no_rollup,
        database_url=args.database_url,
    )


# -- measuring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    window: str
    since: datetime
    owner: str | None
    until: datetime = END


@dataclass
class Measured:
    case: Case
    jobs: int
    milliseconds: list[float]


def cases() -> list[Case]:
    widest = END - timedelta(days=STATS_MAX_DAYS)
    user = owner_name(0)
    month = END - timedelta(days=30)
    mid = END - MID_HOUR
    return [
        Case("admin", "24 h", END - timedelta(hours=24), None),
        Case("admin", "30 days", month, None),
        Case("admin", f"all ({STATS_MAX_DAYS} days)", widest, None),
        Case(f"user ({user})", "30 days", month, user),
        Case(f"user ({user})", f"all ({STATS_MAX_DAYS} days)", widest, user),
        Case("admin", "30 days, mid-hour ends", month - MID_HOUR, None, mid),
        Case("admin", f"{STATS_MAX_DAYS} days, mid-hour ends", widest - MID_HOUR, None, mid),
        Case(
            f"user ({user})", f"{STATS_MAX_DAYS} days, mid-hour ends", widest - MID_HOUR, user, mid
        ),
    ]


async def _stats(session: AsyncSession, case: Case) -> JobStats:
    _, total = await stats_queries.job_stats(
        session, since=case.since, until=case.until, owner=case.owner
    )
    return total


async def explain_sql(session: AsyncSession, case: Case) -> str:
    """`EXPLAIN (ANALYZE, BUFFERS)` of the case's statement, its values written in."""
    statement, _ = await stats_queries.postgresql_statement_for(
        session, since=case.since, until=case.until, owner=case.owner, function=None
    )
    compiled = statement.compile(
        dialect=postgresql.asyncpg.dialect(), compile_kwargs={"literal_binds": True}
    )
    return f"EXPLAIN (ANALYZE, BUFFERS) {compiled}"


async def _explain(sessionmaker: async_sessionmaker[AsyncSession], case: Case) -> None:
    async with sessionmaker() as session:
        plan = await session.scalars(text(await explain_sql(session, case)))
        note(f"bench: plan of {case.name}, {case.window}:")
        for line in plan:
            note(f"  {line}")


async def measure(
    sessionmaker: async_sessionmaker[AsyncSession], case: Case, repeat: int
) -> Measured:
    # A session per run, as a request has: each run reads in a snapshot of its own.
    async with sessionmaker() as session:
        total = await _stats(session, case)  # untimed: warms the caches
    timings = []
    for _ in range(repeat):
        async with sessionmaker() as session:
            started = time.perf_counter()
            again = await _stats(session, case)
            timings.append((time.perf_counter() - started) * 1000)
            if again != total:
                raise BenchError(f"{case.name}, {case.window}: the figures changed between runs")
    return Measured(case, total.jobs, timings)


@dataclass
class Report:
    rows: list[Measured]
    seed_seconds: float
    rollup_seconds: float | None = None  # bringing the rollup up to date after the seeding
    rollup_hours: int = 0
    pass_ms: float | None = None  # a roll-up pass after the newest job changed


async def fill_rollup(
    url: str, sessionmaker: async_sessionmaker[AsyncSession]
) -> tuple[float, int]:
    """Roll up every dirty hour (in the workers' passes), then VACUUM ANALYZE; seconds and
    hours."""
    note("bench: rolling up...")
    started = time.perf_counter()
    hours = 0
    # Passes of the workers' length, with the statistics of the growing rollup refreshed in
    # between, as autovacuum would (the test servers run without it).
    while done := await stats_rollup.roll_up(sessionmaker):
        hours += done
        await vacuum(url, "arq_job_stats")
    await vacuum(url, "arq_job_stats, arq_job_stats_dirty")
    seconds = time.perf_counter() - started
    note(f"bench: rolled up {hours} hours in {seconds:.1f} s")
    return seconds, hours


async def time_one_pass(sessionmaker: async_sessionmaker[AsyncSession]) -> float:
    """Milliseconds of a roll-up pass after the newest job changed."""
    async with sessionmaker.begin() as session:
        await session.execute(
            text(
                "UPDATE arq_jobs SET tries = tries + 1 WHERE job_id = (SELECT job_id FROM arq_jobs"
                " ORDER BY enqueued_at DESC LIMIT 1)"
            )
        )
    started = time.perf_counter()
    hours = await stats_rollup.roll_up(sessionmaker, seconds=None)
    milliseconds = (time.perf_counter() - started) * 1000
    if hours != 1:
        raise BenchError(f"one changed job made {hours} dirty hours")
    return milliseconds


async def run_cases(url: str, options: Options) -> Report:
    note(f"bench: seeding {options.rows} jobs...")
    started = time.perf_counter()
    await seed(url, rows=options.rows, days=options.days, owners=options.owners, seed=options.seed)
    report = Report([], time.perf_counter() - started)
    note(f"bench: seeded in {report.seed_seconds:.1f} s")
    engine = create_engine(url, timeout=120.0)
    rows = report.rows
    try:
        sessionmaker = create_sessionmaker(engine)
        if options.rollup:
            report.rollup_seconds, report.rollup_hours = await fill_rollup(url, sessionmaker)
        async with sessionmaker() as session:
            count = await session.scalar(text("SELECT count(*) FROM arq_jobs"))
        for case in cases():
            note(f"bench: {case.name}, {case.window}")
            row = await measure(sessionmaker, case, options.repeat)
            if case.owner is None and case.window.startswith("all") and row.jobs != count:
                raise BenchError(f"the widest window counted {row.jobs} jobs of {count}")
            rows.append(row)
            if options.explain:
                await _explain(sessionmaker, case)
        if options.rollup:
            report.pass_ms = await time_one_pass(sessionmaker)
    finally:
        await engine.dispose()
    return report


async def run(options: Options) -> Report:
    async with fresh_database(options.database_url) as url:
        note(f"bench: database {make_url(url).database} created and migrated")
        return await run_cases(url, options)


# -- output -----------------------------------------------------------------------------------


def format_table(rows: Sequence[Measured]) -> str:
    cells = [
        (
            row.case.name,
            row.case.window,
            str(row.jobs),
            f"{statistics.median(row.milliseconds):.1f}",
            f"{min(row.milliseconds):.1f}",
            f"{max(row.milliseconds):.1f}",
        )
        for row in rows
    ]
    return text_table(TABLE_HEADERS, cells, right={2, 3, 4, 5})


def describe(options: Options) -> str:
    return (
        f"{options.rows:,} jobs over {options.days} days up to {END:%Y-%m-%d}, {len(TASKS)} "
        f"tasks, {options.owners} owners; {options.repeat} timed runs per case; a fresh "
        f"PostgreSQL database on {redacted(options.database_url)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    outcome = run_main(describe(options), run(options))
    if isinstance(outcome, Failed):
        return outcome.exit_code
    report = outcome
    print(describe(options))
    print(f"seeding (not measured): {report.seed_seconds:.1f} s")
    if report.rollup_seconds is None:
        print("no rollup (--no-rollup): the statistics read the history alone")
    else:
        print(
            f"rolling up (not measured): {report.rollup_hours} hours in "
            f"{report.rollup_seconds:.1f} s"
        )
    print("milliseconds of the stats query (per task and in all), warm, after one untimed run")
    print(format_table(report.rows))
    if report.pass_ms is not None:
        print(f"a roll-up pass after the newest job changed: {report.pass_ms:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
