"""Queue statistics (`GET /api/v1/arq/stats`): exact figures from known history rows, who sees
what, the window's rules, the SQLite path, and a real run through a worker."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq import history, stats_queries
from src.database import create_engine, create_sessionmaker
from tests.arq.helpers import API, at, enqueue, wait_for
from tests.conftest import headers, migrate

STATS = f"{API}/stats"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the window of the seeded rows: [T0, END)
END = T0 + timedelta(hours=1)
WINDOW = {"since": "2026-03-01T12:00:00Z", "until": "2026-03-01T13:00:00Z"}
STATUSES = (
    "waiting",
    "queued",
    "deferred",
    "in_progress",
    "retrying",
    "complete",
    "failed",
    "aborted",
)
FINISHED = ("complete", "failed", "aborted")


@dataclass(frozen=True)
class Job:
    """A history row by its facts: seconds after T0 it was enqueued, deferred, waited, ran."""

    owner: str
    function: str
    status: str
    at: float = 0.0
    deferred: float = 0.0
    wait: float | None = None  # started this long after it was due; None: never started
    run: float | None = None  # finished this long after it started
    tries: int = 1
    retry_in: float | None = None  # retrying: the next try is due this long after the start

    def row(self, number: int) -> dict[str, Any]:
        enqueued = T0 + timedelta(seconds=self.at)
        scheduled = enqueued + timedelta(seconds=self.deferred)
        started = None if self.wait is None else scheduled + timedelta(seconds=self.wait)
        finished = None
        if started is not None and self.run is not None:
            finished = started + timedelta(seconds=self.run)
        if started is not None and self.retry_in is not None:
            scheduled = started + timedelta(seconds=self.retry_in)
        return {
            "job_id": f"stats-{number}",
            "function": self.function,
            "queue_name": "arq:queue",
            "args": {},
            "owner": self.owner,
            "priority": "normal",
            "status": self.status,
            "progress": 0,
            "tries": self.tries,
            "enqueued_at": enqueued,
            "scheduled_for": scheduled,
            "started_at": started,
            "finished_at": finished,
        }


def _jobs() -> list[Job]:
    add = [
        Job("alice", "add", "complete", at=60, wait=0.25, run=0.5),
        Job("alice", "add", "complete", at=120, wait=0.5, run=1.0),
        Job("alice", "add", "complete", at=180, deferred=30, wait=0.125, run=1.5, tries=2),
        Job("alice", "add", "complete", at=240, wait=2.0, run=2.0),
        Job("alice", "add", "complete", at=300, wait=0.75, run=4.0, tries=3),
        Job("alice", "add", "complete", at=0, wait=1.0, run=10.0),  # at `since`: counted
        Job("alice", "add", "failed", at=360, wait=0.0625, run=0.25, tries=3),
        Job("alice", "add", "aborted", at=420),  # before it started: no run, no wait
        Job("alice", "add", "queued", at=480),
        Job("alice", "add", "deferred", at=540, deferred=600),
        Job("alice", "add", "in_progress", at=600, wait=3.0),  # a wait, no run yet
        Job("alice", "add", "retrying", at=660, wait=0.5, tries=2, retry_in=5.0),  # neither
    ]
    sleep = [
        Job("alice", "sleep", "complete", at=700, wait=0.1, run=3.0),
        Job("alice", "sleep", "complete", at=710, wait=0.2, run=5.0),
        Job("alice", "sleep", "aborted", at=720, wait=0.3, run=0.7),  # stopped while running
    ]
    bob = [
        Job("bob", "add", "complete", at=100, wait=0.05, run=0.2),
        Job("bob", "add", "complete", at=200, wait=0.15, run=0.4),
        Job("bob", "add", "complete", at=300, wait=0.35, run=0.8, tries=2),
        Job("bob", "add", "failed", at=400, wait=0.45, run=1.6, tries=3),
        Job("bob", "sleep", "complete", at=500, wait=4.0, run=20.0),
    ]
    outside = [
        Job("alice", "add", "complete", at=-1, wait=0.1, run=99.0),  # before `since`
        Job("alice", "add", "failed", at=3600, wait=0.1, run=99.0),  # at `until`: not counted
        Job("bob", "sleep", "complete", at=-7200, wait=9.0, run=99.0),
    ]
    return [*add, *sleep, *bob, *outside]


JOBS = _jobs()


async def _insert(sessionmaker: async_sessionmaker[AsyncSession], jobs: Sequence[Job]) -> None:
    async with sessionmaker.begin() as session:
        await history.insert_new(session, [job.row(number) for number, job in enumerate(jobs)])


@pytest.fixture
async def seeded(sessionmaker: async_sessionmaker[AsyncSession]) -> list[Job]:
    await _insert(sessionmaker, JOBS)
    return JOBS


# -- the expected figures, computed plainly ------------------------------------------------------


def _percentiles(values: list[float]) -> dict[str, Any]:
    """p50/p95/p99 by linear interpolation between ranks (PostgreSQL's percentile_cont)."""
    if not values:
        return {"samples": 0, "p50": None, "p95": None, "p99": None}
    if len(values) == 1:
        return {"samples": 1, "p50": values[0], "p95": values[0], "p99": values[0]}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"samples": len(values), "p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


def _figures(jobs: Sequence[Job]) -> dict[str, Any]:
    counts = {status: sum(job.status == status for job in jobs) for status in STATUSES}
    finished = sum(counts[status] for status in FINISHED)
    runs = [job.run for job in jobs if job.status in FINISHED and job.run is not None]
    # Each wait counts from when the job was due (after its deferral); not for a retrying job.
    waits = [job.wait for job in jobs if job.wait is not None and job.status != "retrying"]
    return {
        "jobs": len(jobs),
        "statuses": counts,
        "success_rate": counts["complete"] / finished if finished else None,
        "run_seconds": _percentiles(runs),
        "wait_seconds": _percentiles(waits),
        "retried_jobs": sum(job.tries > 1 for job in jobs),
        "extra_tries": sum(job.tries - 1 for job in jobs if job.tries > 1),
    }


def expected(
    jobs: Sequence[Job],
    *,
    owner: str | None = None,
    function: str | None = None,
    start: float = 0,
    end: float = 3600,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`(tasks, total)` as the API should give them for the window [T0 + start s, T0 + end s)
    (by default [T0, T0 + 1 h))."""
    chosen = [
        job
        for job in jobs
        if start <= job.at < end
        and (owner is None or job.owner == owner)
        and (function is None or job.function == function)
    ]
    names = sorted({job.function for job in chosen})
    tasks = [
        {"function": name, **_figures([job for job in chosen if job.function == name])}
        for name in names
    ]
    return tasks, _figures(chosen)


def assert_figures(actual: Any, wanted: Any) -> None:
    """Equal, floats to within rounding (durations travel as microseconds)."""
    if isinstance(wanted, dict):
        assert set(actual) == set(wanted), (actual, wanted)
        for key in wanted:
            assert_figures(actual[key], wanted[key])
    elif isinstance(wanted, list | tuple):
        assert len(actual) == len(wanted), (actual, wanted)
        for one, other in zip(actual, wanted, strict=True):
            assert_figures(one, other)
    elif isinstance(wanted, float):
        assert actual == pytest.approx(wanted, rel=1e-9, abs=1e-9), (actual, wanted)
    else:
        assert actual == wanted


async def get_stats(client: httpx.AsyncClient, caller: str, **params: str) -> dict[str, Any]:
    response = await client.get(STATS, params={**WINDOW, **params}, headers=headers(caller))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- figures and who sees them -------------------------------------------------------------------


async def test_a_user_gets_exact_figures_of_their_own_jobs(
    client: httpx.AsyncClient, seeded: list[Job]
) -> None:
    body = await get_stats(client, "alice")

    tasks, total = expected(seeded, owner="alice")
    assert body["since"] == "2026-03-01T12:00:00Z"
    assert body["until"] == "2026-03-01T13:00:00Z"
    assert body["owner"] == "alice"
    assert body["function"] is None
    assert [task["function"] for task in body["tasks"]] == ["add", "sleep"]
    assert_figures(body["tasks"], tasks)
    assert_figures(body["total"], total)
    # Spelled out for one task, so a wrong `expected` cannot hide a wrong answer.
    add = body["tasks"][0]
    assert add["jobs"] == 12
    assert add["statuses"] == {
        "waiting": 0,
        "queued": 1,
        "deferred": 1,
        "in_progress": 1,
        "retrying": 1,
        "complete": 6,
        "failed": 1,
        "aborted": 1,
    }
    assert add["success_rate"] == pytest.approx(6 / 8)
    # runs 0.25 0.5 1 1.5 2 4 10: p50 the 4th; p95 at rank 5.7 of 0..6: 4 + 0.7 * 6
    assert add["run_seconds"]["samples"] == 7
    assert add["run_seconds"]["p50"] == pytest.approx(1.5)
    assert add["run_seconds"]["p95"] == pytest.approx(8.2)
    assert add["run_seconds"]["p99"] == pytest.approx(9.64)
    assert add["wait_seconds"]["samples"] == 8  # the in_progress job's too; not the retrying
    assert (add["retried_jobs"], add["extra_tries"]) == (4, 1 + 2 + 2 + 1)
    assert body["total"]["jobs"] == 15


async def test_a_users_owner_filter_is_ignored(
    client: httpx.AsyncClient, seeded: list[Job]
) -> None:
    own = await get_stats(client, "alice")
    asked_for_bob = await get_stats(client, "alice", owner="bob")
    assert asked_for_bob == own
    bobs = await get_stats(client, "bob")
    assert bobs["owner"] == "bob"
    tasks, total = expected(seeded, owner="bob")
    assert_figures(bobs["tasks"], tasks)
    assert_figures(bobs["total"], total)


async def test_an_admin_sees_everyones_or_one_owners(
    client: httpx.AsyncClient, seeded: list[Job]
) -> None:
    everyone = await get_stats(client, "root")
    assert everyone["owner"] is None
    tasks, total = expected(seeded)
    assert_figures(everyone["tasks"], tasks)
    assert_figures(everyone["total"], total)
    assert everyone["total"]["jobs"] == 20

    bobs = await get_stats(client, "root", owner="bob")
    assert bobs["owner"] == "bob"
    tasks, total = expected(seeded, owner="bob")
    assert_figures(bobs["tasks"], tasks)
    assert_figures(bobs["total"], total)

    nobody = await get_stats(client, "root", owner="carol")
    assert nobody["tasks"] == []
    assert nobody["total"]["jobs"] == 0


async def test_function_filter_and_an_unknown_task(
    client: httpx.AsyncClient, seeded: list[Job]
) -> None:
    sleeps = await get_stats(client, "root", function="sleep")
    assert sleeps["function"] == "sleep"
    tasks, total = expected(seeded, function="sleep")
    assert_figures(sleeps["tasks"], tasks)
    assert_figures(sleeps["total"], total)

    # As `/jobs?function=`: an unknown task is no rows, not an error.
    unknown = await get_stats(client, "alice", function="no_such_task")
    assert unknown["tasks"] == []
    assert unknown["total"] == expected([])[1]  # zeros, and nulls where there is no sample


async def test_the_default_window_is_the_last_24_hours(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    now = datetime.now(UTC)
    hours_ago = [1, 23, 25]
    async with sessionmaker.begin() as session:
        await history.insert_new(
            session,
            [
                Job("alice", "add", "complete", wait=0.1, run=0.2).row(hours)
                | {"enqueued_at": now - timedelta(hours=hours), "scheduled_for": now}
                for hours in hours_ago
            ],
        )
    response = await client.get(STATS, headers=headers("alice"))
    assert response.status_code == 200, response.text
    body = response.json()
    since, until = at(body, "since"), at(body, "until")
    assert until - since == timedelta(hours=24)
    assert abs(until - datetime.now(UTC)) < timedelta(minutes=1)
    assert body["total"]["jobs"] == 2

    # `until` alone: the 24 hours before it.
    response = await client.get(
        STATS, params={"until": (now - timedelta(hours=24)).isoformat()}, headers=headers("alice")
    )
    assert response.status_code == 200, response.text
    assert response.json()["total"]["jobs"] == 1  # the one of 25 hours ago


# -- the window's rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        (
            {"since": "2026-03-01T13:00:00Z", "until": "2026-03-01T13:00:00Z"},
            "since",
            "must be before until",
        ),
        (
            {"since": "2026-03-02T00:00:00+03:00", "until": "2026-03-01T12:00:00Z"},
            "since",
            "must be before until",
        ),
        ({"since": "2099-01-01T00:00:00Z"}, "since", "must be before until"),
        (
            {"since": "2025-01-01T00:00:00Z", "until": "2026-01-02T00:00:01Z"},
            "since",
            "must be at most 366 days before until",
        ),
        ({"since": "2026-03-01T12:00:00"}, "since", "timezone"),
        ({"until": "1772366400"}, "until", "ISO 8601"),
        ({"until": "0001-01-01T00:30:00+01:00"}, "until", "within the years 1 to 9999"),
        ({"since": "9999-12-31T23:00:00-05:00"}, "since", "within the years 1 to 9999"),
    ],
)
async def test_a_bad_window_is_a_422_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, str], field: str, message: str
) -> None:
    response = await client.get(STATS, params=params, headers=headers("alice"))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "ValidationError"
    assert [error["loc"] for error in body["errors"]] == [["query", field]]
    assert message in body["errors"][0]["msg"]


async def test_the_widest_and_the_earliest_windows_are_answered(
    client: httpx.AsyncClient, seeded: list[Job]
) -> None:
    widest = {"since": "2025-03-01T12:00:00Z", "until": "2026-03-02T12:00:00Z"}  # 366 days
    response = await client.get(STATS, params=widest, headers=headers("root"))
    assert response.status_code == 200, response.text
    assert response.json()["total"]["jobs"] == len(seeded)
    earliest = await client.get(
        STATS, params={"until": "0001-01-01T06:00:00Z"}, headers=headers("root")
    )
    assert earliest.status_code == 200, earliest.text
    assert earliest.json()["since"] == "0001-01-01T00:00:00Z"


async def test_stats_need_a_credential(client: httpx.AsyncClient) -> None:
    response = await client.get(STATS, params={"since": "garbage"})
    assert response.status_code == 401


# -- the same figures on SQLite --------------------------------------------------------------------


async def test_sqlite_computes_the_same_figures_as_postgresql(
    tmp_path: Path, sessionmaker: async_sessionmaker[AsyncSession], seeded: list[Job]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'stats.db'}"
    await asyncio.to_thread(migrate, url)  # alembic runs its own event loop
    engine = create_engine(url)
    try:
        sqlite = create_sessionmaker(engine)
        await _insert(sqlite, seeded)
        for owner, function in [(None, None), ("alice", None), ("bob", "add"), (None, "x")]:
            figures = []
            for database in (sqlite, sessionmaker):
                async with database() as session:
                    tasks, total = await stats_queries.job_stats(
                        session, since=T0, until=END, owner=owner, function=function
                    )
                figures.append(([task.model_dump() for task in tasks], total.model_dump()))
            on_sqlite, on_postgresql = figures
            assert_figures(on_sqlite, expected(seeded, owner=owner, function=function))
            assert_figures(on_postgresql, on_sqlite)
    finally:
        await engine.dispose()


# -- a real run ------------------------------------------------------------------------------------


async def test_jobs_run_by_a_worker_are_counted(client: httpx.AsyncClient, worker: Worker) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    ids = [
        (await enqueue(client, "add", kwargs={"a": number, "b": 1})).json()["job_id"]
        for number in range(3)
    ]
    ids.append((await enqueue(client, "fail")).json()["job_id"])
    ids.append((await enqueue(client, "add", owner="bob", kwargs={"a": 1})).json()["job_id"])
    done = [await wait_for(client, job_id) for job_id in ids[:4]]
    await wait_for(client, ids[4], owner="bob")
    until = datetime.now(UTC) + timedelta(seconds=1)

    response = await client.get(
        STATS,
        params={"since": since.isoformat(), "until": until.isoformat()},
        headers=headers("alice"),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    by_task = {task["function"]: task for task in body["tasks"]}
    assert set(by_task) == {"add", "fail"}
    assert by_task["add"]["statuses"]["complete"] == 3
    assert by_task["fail"]["statuses"]["failed"] == 1
    assert body["total"]["jobs"] == 4
    assert body["total"]["success_rate"] == pytest.approx(0.75)
    runs = [(at(job, "finished_at") - at(job, "started_at")).total_seconds() for job in done]
    waits = [
        max(0.0, (at(job, "started_at") - at(job, "scheduled_for")).total_seconds()) for job in done
    ]
    assert_figures(body["total"]["run_seconds"], _percentiles(runs))
    assert_figures(body["total"]["wait_seconds"], _percentiles(waits))
    tries = [job["tries"] for job in done]
    assert body["total"]["retried_jobs"] == sum(count > 1 for count in tries)

    everyone = await client.get(
        STATS,
        params={"since": since.isoformat(), "until": until.isoformat()},
        headers=headers("root"),
    )
    assert everyone.json()["total"]["jobs"] == 5
