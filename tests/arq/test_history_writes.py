"""The workers' batched history writes, on PostgreSQL: what a batch of endings sets on each row
(one statement for the whole batch there), and that a finished job is never rewritten."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq import history, history_writes
from src.arq.models import JobRecord
from src.arq.outcome import Outcome
from src.arq.schemas import JobStatus

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def row(job_id: str) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "function": "add",
        "queue_name": "arq:queue",
        "args": {"a": 1},
        "owner": "alice",
        "priority": "normal",
        "status": "in_progress",
        "progress": 40,
        "tries": 1,
        "enqueued_at": T0,
        "scheduled_for": T0,
        "notify_url": None,
        "notify_secret": None,
        "request_id": None,
        "on_dependency_failure": None,
    }


async def test_a_batch_of_endings_sets_what_each_ending_says(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    ids = ["done", "broke", "earlier", "aborted"]
    started = T0 + timedelta(seconds=5)
    async with sessionmaker.begin() as session:
        await history.insert_new(session, [row(job_id) for job_id in ids])
        await session.execute(
            update(JobRecord).values(message="try 1 failed, retrying", started_at=started)
        )
        await session.execute(
            update(JobRecord)
            .where(JobRecord.job_id == "earlier")
            .values(status="complete", result={"kept": True})
        )
    end = T0 + timedelta(seconds=9, microseconds=123_000)

    def ending(status: JobStatus, **fields: Any) -> Outcome:
        values: dict[str, Any] = {
            "result": None,
            "error": None,
            "tries": None,
            "started_at": None,
            **fields,
        }
        return Outcome(status=status, finished_at=end, **values)

    async with sessionmaker.begin() as session:
        recorded = await history_writes.mark_finished_many(
            session,
            [
                history_writes.finished_row(
                    "done", ending(JobStatus.COMPLETE, result=[1, "ü"], tries=2)
                ),
                history_writes.finished_row(
                    "broke",
                    ending(
                        JobStatus.FAILED,
                        error={"type": "ValueError", "message": "no"},
                        started_at=end - timedelta(seconds=1),
                    ),
                ),
                history_writes.finished_row(
                    "earlier", ending(JobStatus.FAILED, error={"type": "X"})
                ),
                history_writes.finished_row("aborted", ending(JobStatus.ABORTED)),
            ],
        )
    assert sorted(recorded) == ["aborted", "broke", "done"]  # a finished job is left alone
    async with sessionmaker() as session:
        rows = {job_id: await history.get(session, job_id) for job_id in ids}
    done, broke, earlier, aborted = (rows[job_id] for job_id in ids)
    assert done is not None and broke is not None and earlier is not None and aborted is not None
    assert (done.status, done.result, done.error, done.tries) == ("complete", [1, "ü"], None, 2)
    assert (done.progress, done.started_at, done.finished_at) == (100, started, end)
    assert done.message == "try 1 failed, retrying"  # as before: a completion keeps its note
    assert (broke.status, broke.error, broke.tries) == (
        "failed",
        {"type": "ValueError", "message": "no"},
        1,  # not given: kept
    )
    assert (broke.progress, broke.message) == (40, None)
    assert broke.started_at == end - timedelta(seconds=1)
    assert (earlier.status, earlier.result, earlier.error) == ("complete", {"kept": True}, None)
    assert (aborted.status, aborted.result, aborted.error, aborted.message) == (
        "aborted",
        None,
        None,
        None,
    )


async def test_a_batch_of_starts_and_retries_sets_each_row_and_spares_finished_jobs(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    ids = ["starts", "retries", "finished"]
    async with sessionmaker.begin() as session:
        await history.insert_new(session, [row(job_id) | {"status": "queued"} for job_id in ids])
        await session.execute(
            update(JobRecord).where(JobRecord.job_id == "finished").values(status="complete")
        )
    t1, t2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2, microseconds=500_000)
    async with sessionmaker.begin() as session:
        await history_writes.mark_started_many(
            session,
            [
                {"b_id": "starts", "b_tries": 2, "b_at": t1},
                {"b_id": "finished", "b_tries": 7, "b_at": t1},
            ],
        )
        await history_writes.mark_waiting_many(
            session,
            [
                {"b_id": "retries", "b_tries": 2, "b_at": t1},
                {"b_id": "retries", "b_tries": 3, "b_at": t2},  # the job's later row wins
            ],
        )
    async with sessionmaker() as session:
        starts, retries, finished = [await history.get(session, job_id) for job_id in ids]
    assert starts is not None and retries is not None and finished is not None
    assert (starts.status, starts.tries, starts.started_at) == ("in_progress", 2, t1)
    assert (retries.status, retries.tries, retries.scheduled_for) == ("retrying", 3, t2)
    assert (finished.status, finished.tries, finished.started_at) == ("complete", 1, None)
