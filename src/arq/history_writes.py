"""The workers' batched writes of the job history: starts, retries and endings of many jobs,
each kind in one statement. Callers own the transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, Table, TextClause, and_, bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from src.arq.history import job_id_in
from src.arq.models import JobRecord
from src.arq.outcome import Outcome
from src.arq.schemas import FINISHED_STATUSES, JobStatus
from src.database import JSONType, UTCDateTime

_JOBS: Table = JobRecord.__table__  # type: ignore[assignment]
_FINISHED_VALUES = [s.value for s in FINISHED_STATUSES]
_NOT_FINISHED = JobRecord.status.not_in(_FINISHED_VALUES)


# Spelled out rather than NOT IN: executemany() refuses expanding IN parameters.
_STILL_OPEN = and_(*(_JOBS.c.status != value for value in _FINISHED_VALUES))


def _open_many_sql(at_column: str) -> TextClause:
    """PostgreSQL: a batch of starts (or retries) in ONE statement, as `_FINISH_MANY` below."""
    return text(
        f"""
        UPDATE arq_jobs AS j SET status = :status, tries = v.tries, {at_column} = v.at
        FROM unnest(
            CAST(:ids AS text[]), CAST(:tries AS integer[]), CAST(:ats AS timestamptz[])
        ) AS v(job_id, tries, at)
        WHERE j.job_id = v.job_id AND j.status NOT IN ('complete', 'failed', 'aborted')
        """  # noqa: S608 (at_column is one of the two names below, never input)
    )


_OPEN_MANY = {column: _open_many_sql(column) for column in ("started_at", "scheduled_for")}


async def _mark_open_many(
    session: AsyncSession, rows: Sequence[dict[str, Any]], *, status: JobStatus, at_column: str
) -> None:
    """Set `status`, `tries` and `at_column` per row on jobs not finished on record."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        latest = list({row["b_id"]: row for row in rows}.values())  # a job's last row wins
        await session.execute(
            _OPEN_MANY[at_column],
            {
                "status": status.value,
                "ids": [row["b_id"] for row in latest],
                "tries": [row["b_tries"] for row in latest],
                "ats": [_utc(row["b_at"]) for row in latest],
            },
        )
        return
    statement = (
        update(_JOBS)
        .where(_JOBS.c.job_id == bindparam("b_id"), _STILL_OPEN)
        .values(
            {"status": status.value, "tries": bindparam("b_tries"), at_column: bindparam("b_at")}
        )
    )
    await (await session.connection()).execute(statement, list(rows))


async def mark_started_many(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of `{b_id, b_tries, b_at}`: jobs a worker started at `b_at`."""
    await _mark_open_many(session, rows, status=JobStatus.IN_PROGRESS, at_column="started_at")


def finished_row(job_id: str, outcome: Outcome) -> dict[str, Any]:
    """A row for `mark_finished_many` from ARQ's record of the job's ending."""
    return {
        "b_id": job_id,
        "b_status": outcome.status.value,
        "b_at": outcome.finished_at,
        "b_tries": outcome.tries,
        "b_started": outcome.started_at,
        "b_result": outcome.result,
        "b_error": outcome.error,
    }


# PostgreSQL: every ending of a batch in ONE statement (an executemany is a statement per row,
# and each fires the statistics' statement trigger). Values as in the executemany below: a
# complete job's progress 100, another's message cleared, tries and start time kept if not given,
# a None result or error stored as JSON null (as the JSON type binds it).
_FINISH_MANY = text(
    """
    UPDATE arq_jobs AS j SET
        status = v.status,
        finished_at = v.at,
        tries = COALESCE(v.tries, j.tries),
        started_at = COALESCE(v.started, j.started_at),
        result = CAST(v.result AS jsonb),
        error = CAST(v.error AS jsonb),
        progress = CASE WHEN v.status = 'complete' THEN 100 ELSE j.progress END,
        message = CASE WHEN v.status = 'complete' THEN j.message ELSE NULL END
    FROM unnest(
        CAST(:ids AS text[]), CAST(:statuses AS text[]), CAST(:ats AS timestamptz[]),
        CAST(:tries AS integer[]), CAST(:starteds AS timestamptz[]),
        CAST(:results AS text[]), CAST(:errors AS text[])
    ) AS v(job_id, status, at, tries, started, result, error)
    WHERE j.job_id = v.job_id AND j.status NOT IN ('complete', 'failed', 'aborted')
    """
)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _finish_arrays(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    return {
        "ids": [row["b_id"] for row in rows],
        "statuses": [row["b_status"] for row in rows],
        "ats": [_utc(row["b_at"]) for row in rows],
        "tries": [row["b_tries"] for row in rows],
        "starteds": [_utc(row["b_started"]) for row in rows],
        "results": [json.dumps(row["b_result"]) for row in rows],
        "errors": [json.dumps(row["b_error"]) for row in rows],
    }


async def mark_finished_many(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Rows of `{b_id, b_status, b_at, b_tries, b_started, b_result, b_error}`; the ids whose
    ending this call recorded (a job already finished on record is left alone)."""
    if not rows:
        return []
    ids = [row["b_id"] for row in rows]
    # The open rows, locked (in one order, against deadlocks) until the commit: a concurrent
    # recorder of the same ending (a status read, the reconciliation) waits, then finds the job
    # finished, so each ending is recorded, and reported as recorded, exactly once.
    still_open = set(
        await session.scalars(
            select(JobRecord.job_id)
            .where(job_id_in(session, ids), _NOT_FINISHED)
            .order_by(JobRecord.job_id)
            .with_for_update()
        )
    )
    rows = [row for row in rows if row["b_id"] in still_open]
    if rows and session.get_bind().dialect.name == "postgresql":
        await session.execute(_FINISH_MANY, _finish_arrays(rows))
        return [job_id for job_id in ids if job_id in still_open]
    complete = [row for row in rows if row["b_status"] == JobStatus.COMPLETE.value]
    other = [row for row in rows if row["b_status"] != JobStatus.COMPLETE.value]
    values: dict[str, Any] = {
        "status": bindparam("b_status"),
        "finished_at": bindparam("b_at"),
        "tries": func.coalesce(bindparam("b_tries", type_=Integer), _JOBS.c.tries),
        "started_at": func.coalesce(bindparam("b_started", type_=UTCDateTime), _JOBS.c.started_at),
        "result": bindparam("b_result", type_=JSONType),
        "error": bindparam("b_error", type_=JSONType),
    }
    connection = await session.connection()
    where = (_JOBS.c.job_id == bindparam("b_id"), _STILL_OPEN)
    if complete:
        await connection.execute(
            update(_JOBS).where(*where).values(**values, progress=100), complete
        )
    if other:
        # A failed or aborted job keeps no "try 2 of 3 failed, retrying" note.
        await connection.execute(update(_JOBS).where(*where).values(**values, message=None), other)
    return [job_id for job_id in ids if job_id in still_open]


async def mark_waiting_many(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of `{b_id, b_tries, b_at}`: jobs ARQ will run again (retrying) at `b_at`."""
    await _mark_open_many(session, rows, status=JobStatus.RETRYING, at_column="scheduled_for")
