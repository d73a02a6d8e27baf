"""The statistics' rollup (`src.arq.stats_rollup`): windows over rolled-up months, days and hours
with partial edges answer as the history does (counts exactly, percentiles within PRECISION),
through late endings, concurrent roll-ups, deletions; who sees what; where a window is read."""

from __future__ import annotations

import asyncio
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq import (
    history,
    history_shared,
    history_writes,
    stats_measures,
    stats_queries,
    stats_rollup,
)
from src.arq.models import JobRecord, JobStatsDirtyHour, JobStatsRollup
from src.arq.outcome import Outcome
from src.arq.schemas import JobStatus
from src.arq.service import ArqService
from src.arq.stats_window import WindowPlan, plan_window
from tests.arq.test_stats import STATS, T0, Job, expected
from tests.conftest import headers

PRECISION = stats_measures.PRECISION
DAY = 86400.0
# Windows as (since, until) in seconds after T0 (2026-03-01 12:00 UTC); the jobs are enqueued
# from 12 hours before T0 to 3 days after.
MID_HOUR = (17 * 60 + 5.25, DAY + 17 * 3600 + 42 * 60 + 10)  # hours, a whole day, hours
MONTH = (-37.5 * 3600, 31 * DAY + 13 * 3600)  # February's last hours, March, April's first
WINDOWS = [MID_HOUR, MONTH]


def _random_jobs(count: int, seed: int) -> list[Job]:
    rng = random.Random(seed)
    jobs = []
    for _ in range(count):
        status = rng.choice(["complete"] * 6 + ["failed", "aborted", "queued", "in_progress"])
        started = status != "queued" and not (status == "aborted" and rng.random() < 0.5)
        ran = started and status in ("complete", "failed", "aborted")
        jobs.append(
            Job(
                owner=rng.choice(["alice", "alice", "bob", "carol"]),
                function=rng.choice(["add", "sleep"]),
                status=status,
                at=round(rng.uniform(-12 * 3600, 3 * DAY), 6),
                deferred=rng.choice([0.0, 0.0, round(rng.uniform(0, 600), 3)]),
                wait=(rng.choice([0.0, round(rng.expovariate(4), 6)]) if started else None),
                run=round(rng.lognormvariate(0, 1.5), 6) if ran else None,
                tries=rng.choice([1, 1, 1, 2, 3]) if started else 0,
            )
        )
    return jobs


JOBS = _random_jobs(500, seed=13)


async def _insert(sessionmaker: async_sessionmaker[AsyncSession], jobs: Sequence[Job]) -> None:
    rows = [job.row(number) for number, job in enumerate(jobs)]
    for start in range(0, len(rows), 200):
        async with sessionmaker.begin() as session:
            await history.insert_new(session, rows[start : start + 200])


async def _roll_up(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    hours = await stats_rollup.roll_up(sessionmaker, seconds=None)
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(JobStatsDirtyHour)) == 0
    return hours


def _params(window: tuple[float, float], **more: str) -> dict[str, str]:
    since, until = (T0 + timedelta(seconds=moment) for moment in window)
    return {"since": since.isoformat(), "until": until.isoformat(), **more}


async def _stats(
    client: httpx.AsyncClient, caller: str, window: tuple[float, float], **more: str
) -> dict[str, Any]:
    response = await client.get(STATS, params=_params(window, **more), headers=headers(caller))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_close(actual: Any, exact: Any) -> None:
    """Equal, but percentiles within PRECISION of the exact ones (counts and rates exactly)."""
    if isinstance(exact, dict):
        assert set(actual) == set(exact), (actual, exact)
        for key, value in exact.items():
            if key in ("p50", "p95", "p99") and value is not None:
                assert actual[key] == pytest.approx(value, rel=PRECISION, abs=1e-6), (key, actual)
            else:
                assert_close(actual[key], value)
    elif isinstance(exact, list):
        assert len(actual) == len(exact), (actual, exact)
        for one, other in zip(actual, exact, strict=True):
            assert_close(one, other)
    elif isinstance(exact, float):
        assert actual == pytest.approx(exact, rel=1e-9), (actual, exact)
    else:
        assert actual == exact


def assert_answer(
    body: dict[str, Any],
    jobs: Sequence[Job],
    window: tuple[float, float],
    *,
    owner: str | None = None,
    function: str | None = None,
) -> None:
    tasks, total = expected(jobs, owner=owner, function=function, start=window[0], end=window[1])
    assert total["jobs"] > 0
    assert_close(body["tasks"], tasks)
    assert_close(body["total"], total)


async def _reads_rollup(
    sessionmaker: async_sessionmaker[AsyncSession], window: tuple[float, float]
) -> bool:
    since, until = (T0 + timedelta(seconds=moment) for moment in window)
    async with sessionmaker() as session:
        _, rolled_up = await stats_queries.postgresql_statement_for(
            session, since=since, until=until, owner=None, function=None
        )
    return rolled_up


# -- the answers -------------------------------------------------------------------------------


@pytest.mark.parametrize("window", WINDOWS, ids=["mid-hour ends", "a month and its edges"])
async def test_rolled_up_windows_answer_as_the_history(
    client: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    service: ArqService,
    window: tuple[float, float],
) -> None:
    await _insert(sessionmaker, JOBS)
    # Not rolled up yet: the hours with jobs are dirty, read from the history.
    assert_answer(await _stats(client, "root", window), JOBS, window)

    await service.sweep()  # the workers' reconciliation runs the roll-up with its sweeps
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(JobStatsDirtyHour)) == 0
        grains = set(await session.scalars(select(JobStatsRollup.grain).distinct()))
    assert grains == {"hour", "day", "month"}
    assert await _reads_rollup(sessionmaker, window)

    assert_answer(await _stats(client, "root", window), JOBS, window)
    assert_answer(await _stats(client, "alice", window), JOBS, window, owner="alice")
    assert_answer(await _stats(client, "root", window, owner="bob"), JOBS, window, owner="bob")
    sleeps = await _stats(client, "root", window, owner="carol", function="sleep")
    assert_answer(sleeps, JOBS, window, owner="carol", function="sleep")


async def test_a_user_never_sees_another_owners_jobs_through_the_rollup(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await _insert(sessionmaker, JOBS)
    await _roll_up(sessionmaker)
    window = MONTH
    everyone = await _stats(client, "root", window)
    for owner, other in (("alice", "bob"), ("bob", "alice")):
        own = await _stats(client, owner, window)
        assert own["owner"] == owner
        assert_answer(own, JOBS, window, owner=owner)
        assert own["total"]["jobs"] < everyone["total"]["jobs"]
        # Asking for someone else's is ignored for a user.
        assert await _stats(client, owner, window, owner=other) == own
    for owner in ("alice", "bob", "carol"):
        assert_answer(await _stats(client, "root", window, owner=owner), JOBS, window, owner=owner)
    nobody = await _stats(client, "root", window, owner="dave")
    assert nobody["tasks"] == []
    assert nobody["total"]["jobs"] == 0


# -- keeping it true ---------------------------------------------------------------------------


async def test_a_late_ending_counts_at_once_and_after_the_next_roll_up(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    running = [Job("alice", "sleep", "in_progress", at=7200 + n, wait=0.5) for n in range(3)]
    jobs = [*JOBS, *running]
    await _insert(sessionmaker, jobs)
    await _roll_up(sessionmaker)
    window = MID_HOUR
    before = await _stats(client, "alice", window)

    # A worker records the endings now, days after the hour they were enqueued in was rolled up.
    now = datetime.now(UTC)
    started = [T0 + timedelta(seconds=7200.5 + n) for n in range(3)]
    ended = [
        replace(job, status="complete", run=(now - start).total_seconds())
        for job, start in zip(running, started, strict=True)
    ]
    numbers = range(len(JOBS), len(jobs))
    async with sessionmaker.begin() as session:
        recorded = await history_writes.mark_finished_many(
            session,
            [
                history_writes.finished_row(
                    f"stats-{number}",
                    Outcome(
                        status=JobStatus.COMPLETE,
                        finished_at=now,
                        tries=1,
                        started_at=started[n],
                        result=None,
                        error=None,
                    ),
                )
                for n, number in enumerate(numbers)
            ],
        )
    assert len(recorded) == 3
    jobs = [*JOBS, *ended]
    at_once = await _stats(client, "alice", window)  # its hour is dirty: read from the history
    assert await _reads_rollup(sessionmaker, window)
    assert at_once["total"]["statuses"]["complete"] == before["total"]["statuses"]["complete"] + 3
    assert_answer(at_once, jobs, window, owner="alice")

    assert await _roll_up(sessionmaker) == 1
    assert await _stats(client, "alice", window) == at_once
    assert_answer(await _stats(client, "root", window), jobs, window)


async def test_concurrent_roll_ups_count_each_job_once(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await _insert(sessionmaker, JOBS)
    # A batch that holds the lock: another roll-up in the meantime does nothing...
    async with sessionmaker.begin() as first:
        assert await stats_rollup.roll_up_batch(first, hours=10_000)
        async with sessionmaker.begin() as second:
            assert await stats_rollup.roll_up_batch(second) is None
        # ...and a job changed after the batch took its marks leaves its hour dirty.
        async with sessionmaker.begin() as writer:
            await writer.execute(
                update(JobRecord).where(JobRecord.job_id == "stats-0").values(tries=7)
            )
    jobs = [*JOBS]
    jobs[0] = replace(JOBS[0], tries=7)
    for window in WINDOWS:
        assert_answer(await _stats(client, "root", window), jobs, window)

    # Roll-ups side by side while jobs change, and every hour rolled up twice over.
    async def change(number: int) -> None:
        async with sessionmaker.begin() as session:
            await session.execute(
                update(JobRecord).where(JobRecord.job_id == f"stats-{number}").values(tries=5)
            )

    await asyncio.gather(
        *(stats_rollup.roll_up(sessionmaker, seconds=None, hours=5) for _ in range(3)),
        *(change(number) for number in range(1, 40, 3)),
    )
    for number in range(1, 40, 3):
        jobs[number] = replace(JOBS[number], tries=5)
    async with sessionmaker.begin() as session:
        await session.execute(
            text("INSERT INTO arq_job_stats_dirty (hour) SELECT period FROM arq_job_stats")
        )
    await _roll_up(sessionmaker)
    for window in WINDOWS:
        assert await _reads_rollup(sessionmaker, window)
        assert_answer(await _stats(client, "root", window), jobs, window)
        assert_answer(await _stats(client, "bob", window), jobs, window, owner="bob")


async def test_deleted_jobs_leave_the_statistics_with_the_history(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await _insert(sessionmaker, JOBS)
    await _roll_up(sessionmaker)
    # The cleanup deletes the jobs that finished before a cut-off (here: the first day's).
    cutoff = T0 + timedelta(hours=12)
    async with sessionmaker.begin() as session:
        deleted = await history_shared.delete_finished_before(session, cutoff, limit=10_000)
    kept = [
        job
        for job in JOBS
        if not (
            job.status in ("complete", "failed", "aborted")
            and (job.row(0)["finished_at"] or datetime.max.replace(tzinfo=UTC)) < cutoff
        )
    ]
    assert deleted == len(JOBS) - len(kept) > 0
    for window in WINDOWS:
        assert_answer(await _stats(client, "root", window), kept, window)
    await _roll_up(sessionmaker)
    for window in WINDOWS:
        assert_answer(await _stats(client, "root", window), kept, window)

    # Emptying the history empties the rollup.
    async with sessionmaker.begin() as session:
        await session.execute(text("TRUNCATE arq_jobs, arq_job_dependencies"))
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(JobStatsRollup)) == 0
    assert (await _stats(client, "root", MONTH))["total"]["jobs"] == 0


# -- where a window is read, and the histograms ----------------------------------------------


def _at(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


def test_a_window_takes_whole_months_days_and_hours_and_its_edges_from_the_history() -> None:
    since, until = _at("2026-02-27T22:30:00"), _at("2026-04-02T01:15:00")
    plan = plan_window(since, until, [])
    assert plan == WindowPlan(
        periods={
            "hour": [_at("2026-02-27T23:00:00"), _at("2026-04-02T00:00:00")],
            "day": [_at("2026-02-28T00:00:00"), _at("2026-04-01T00:00:00")],
            "month": [_at("2026-03-01T00:00:00")],
        },
        history=[(since, _at("2026-02-27T23:00:00")), (_at("2026-04-02T01:00:00"), until)],
    )
    # A dirty hour breaks its month and its day up, and is read from the history.
    dirty = _at("2026-03-10T05:00:00")
    plan = plan_window(since, until, [dirty])
    assert "month" not in plan.periods
    assert dirty not in plan.periods["hour"]
    assert (dirty, dirty + timedelta(hours=1)) in plan.history
    assert _at("2026-03-10T04:00:00") in plan.periods["hour"]
    assert _at("2026-03-11T00:00:00") in plan.periods["day"]
    # Within one hour, or at the ends of time: the history alone.
    inside = (_at("2026-03-01T10:05:00"), _at("2026-03-01T10:55:00"))
    assert plan_window(*inside, []) == WindowPlan(history=[inside])
    end_of_time = (_at("9999-12-31T22:30:00"), datetime.max.replace(tzinfo=UTC))
    assert plan_window(*end_of_time, []) == WindowPlan(history=[end_of_time])
    last_hours = (_at("9999-12-31T21:30:00"), datetime.max.replace(tzinfo=UTC))
    assert plan_window(*last_hours, []).periods == {"hour": [_at("9999-12-31T22:00:00")]}
    start_of_time = (datetime.min.replace(tzinfo=UTC), _at("0001-01-03T00:00:00"))
    assert plan_window(*start_of_time, []).periods == {
        "day": [_at("0001-01-01T00:00:00"), _at("0001-01-02T00:00:00")]
    }


def _bucket(seconds: float) -> int:
    """The SQL `bucket`, for positive durations."""
    if seconds < stats_measures.BASE:
        return 0
    ratio = math.log(seconds / stats_measures.BASE) / math.log(stats_measures.RATIO)
    return math.floor(ratio) + 1


def test_percentiles_from_a_histogram_are_within_the_stated_precision() -> None:
    rng = random.Random(5)
    for size in (1, 2, 3, 10, 100, 5000):
        values = sorted(rng.lognormvariate(0, 3) for _ in range(size))
        histogram: dict[int, int] = {}
        for value in values:
            histogram[_bucket(value)] = histogram.get(_bucket(value), 0) + 1
        estimates = stats_measures.histogram_percentiles(histogram, stats_queries.FRACTIONS)
        for fraction, estimate in zip(stats_queries.FRACTIONS, estimates, strict=True):
            exact = stats_queries.percentile_cont(values, fraction)
            assert estimate == pytest.approx(exact, rel=PRECISION), (size, fraction)
    assert stats_measures.histogram_percentiles({}, (0.5,)) == [None]
    assert stats_measures.histogram_percentiles({0: 3}, (0.5, 0.99)) == [0.0, 0.0]


def test_percentile_cont_interpolates_linearly() -> None:
    assert stats_queries.percentile_cont([], 0.5) is None
    assert stats_queries.percentile_cont([7.0], 0.99) == 7.0
    assert stats_queries.percentile_cont([1.0, 2.0], 0.5) == 1.5
    assert stats_queries.percentile_cont([1.0, 2.0, 3.0, 4.0, 5.0], 0.95) == pytest.approx(4.8)
    values = [0.3, 1.1, 2.0, 2.0, 8.5, 13.0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for index, fraction in ((49, 0.5), (94, 0.95), (98, 0.99)):
        assert stats_queries.percentile_cont(values, fraction) == pytest.approx(cuts[index])
