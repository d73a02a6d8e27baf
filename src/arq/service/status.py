"""Reading jobs: a job's status and result, the caller's jobs, the failed ones (dead letters).

Read from the history table and, while a job is not finished there, refined from Redis; a
caller sees only its own jobs (an admin: everyone's), anyone else's is "not found".
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError

from src.arq import history, keys
from src.arq.log_masking import mask_secrets
from src.arq.models import JobRecord
from src.arq.outcome import outcome_from_result
from src.arq.schemas import (
    JobError,
    JobPage,
    JobResultResponse,
    JobStatus,
    JobStatusResponse,
    JobSummary,
    Priority,
)
from src.arq.serialization import deserialize
from src.arq.service.core import SYSTEM
from src.arq.service.dependencies import DependencyMixin, blocked_by
from src.auth.schemas import Principal

# How often a wait for a result looks again without having heard from the job.
WAIT_RECHECK_SECONDS = 1.0


class StatusMixin(DependencyMixin):
    """Where jobs stand and what they returned."""

    async def resolve_job_id(self, job_id: str, *, principal: Principal = SYSTEM) -> str:
        """The stored id of the job `job_id` names for this caller (the caller's own job may be
        named by the id they chose); 404 if none."""
        return (await self._visible_record(job_id, principal)).job_id

    async def get_job_status(
        self, job_id: str, *, principal: Principal = SYSTEM
    ) -> JobStatusResponse:
        """Where the job stands; 404 if it does not exist or belongs to someone else."""
        record = await self._refresh(await self._visible_record(job_id, principal))
        response = _status_response(record)
        if record.on_dependency_failure is not None:
            dependencies = await self._dependency_view(record.job_id)
            response.depends_on = [dependency.job_id for dependency in dependencies]
            if record.status == JobStatus.WAITING.value:
                response.blocked_by = blocked_by(dependencies)
        return response

    async def get_job_args(self, job_id: str, *, principal: Principal = SYSTEM) -> dict[str, Any]:
        """The job's arguments as queued, values under secret-looking keys masked; 404 as for
        its status."""
        masked: dict[str, Any] = mask_secrets((await self._visible_record(job_id, principal)).args)
        return masked

    async def get_job_result(
        self, job_id: str, *, principal: Principal = SYSTEM
    ) -> JobResultResponse | JobStatusResponse:
        """The result of a finished job, or its status while it is not finished."""
        record = await self._refresh(await self._visible_record(job_id, principal))
        status = JobStatus(record.status)
        if not status.finished:
            return _status_response(record)
        return _result_response(
            record, status, result=record.result, error=record.error, at=record.finished_at
        )

    async def wait_for_result(
        self, job_id: str, *, principal: Principal = SYSTEM
    ) -> JobResultResponse:
        """Wait until the job has ended and return its result (Python API; bound the wait with
        `async with asyncio.timeout(...)`): woken by the job's events on Redis (the worker
        announces an ending as soon as Redis holds it), looking again every
        `WAIT_RECHECK_SECONDS` in case a message was missed; 404 if the caller may not see
        the job."""
        record = await self._visible_record(job_id, principal)
        stored = record.job_id
        if JobStatus(record.status).finished:
            outcome = await self.get_job_result(stored, principal=principal)
            if isinstance(outcome, JobResultResponse):
                return outcome
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        subscribed = look_in_history = False  # the history was just read
        try:
            while True:
                if not subscribed:
                    # Subscribed before the look: an ending between the two still wakes us.
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.subscribe(keys.job_events(stored))
                        subscribed = True
                # An ending in Redis is read there, while the worker records it (recording it
                # from here too would only wait for the worker's transaction on the row).
                ended = await self._ending_in_redis(record)
                if ended is None and (look_in_history or not subscribed):
                    outcome = await self.get_job_result(stored, principal=principal)
                    ended = outcome if isinstance(outcome, JobResultResponse) else None
                if ended is not None:
                    return ended
                look_in_history = True  # after a message (an abort, say) or a quiet while
                if not subscribed:  # Redis is away: the history still tells
                    await asyncio.sleep(WAIT_RECHECK_SECONDS)
                    continue
                try:
                    await pubsub.get_message(timeout=WAIT_RECHECK_SECONDS)
                except (RedisError, OSError):
                    subscribed = False
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.reset()
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _ending_in_redis(self, record: JobRecord) -> JobResultResponse | None:
        """The job's ending as the worker stored it in Redis (complete or failed), if it is
        there; None otherwise (and for an abort, whose `aborted_by` the history holds)."""
        try:
            raw = await self.redis.get(keys.result_key_prefix + record.job_id)
        except (RedisError, OSError):
            return None
        if not raw:
            return None
        outcome = outcome_from_result(deserialize(raw))
        if outcome.status is JobStatus.ABORTED:
            return None
        return _result_response(
            record,
            outcome.status,
            result=outcome.result,
            error=outcome.error,
            at=outcome.finished_at,
        )

    async def list_jobs(
        self,
        *,
        principal: Principal,
        status: JobStatus | None = None,
        function: str | None = None,
        owner: str | None = None,
        limit: int = 50,
        offset: int = 0,
        since: datetime | None = None,
    ) -> JobPage:
        """The caller's jobs (an admin's: everyone's, or `owner`'s), newest first; `since`:
        only those enqueued from then on."""
        owner_filter = principal.owner_filter(owner)
        async with self.sessionmaker() as session:
            rows, total = await history.page(
                session,
                owner=owner_filter,
                status=status,
                function=function,
                limit=limit,
                offset=offset,
                since=since,
            )
        return JobPage(
            items=[
                JobSummary(
                    job_id=row.job_id,
                    function=row.function,
                    owner=row.owner,
                    status=JobStatus(row.status),
                    priority=Priority(row.priority),
                    progress=row.progress,
                    message=row.message,
                    tries=row.tries,
                    enqueued_at=row.enqueued_at,
                    finished_at=row.finished_at,
                    error=JobError(**row.error) if row.error else None,
                )
                for row in rows
            ],
            total=total,
            limit=limit,
            offset=offset,
        )

    async def list_failed(
        self, *, principal: Principal, function: str | None = None, limit: int = 50, offset: int = 0
    ) -> JobPage:
        """Failed jobs with their errors and tries (an admin's: everyone's)."""
        return await self.list_jobs(
            principal=principal,
            status=JobStatus.FAILED,
            function=function,
            limit=limit,
            offset=offset,
        )


def _result_response(
    record: JobRecord,
    status: JobStatus,
    *,
    result: Any,
    error: dict[str, Any] | None,
    at: datetime | None,
) -> JobResultResponse:
    """A finished job's result (from its history row, or its ending in Redis)."""
    return JobResultResponse(
        job_id=record.job_id,
        function=record.function,
        status=status,
        success=status is JobStatus.COMPLETE,
        result=result,
        error=JobError(**error) if error else None,
        finished_at=at,
    )


def _status_response(record: JobRecord) -> JobStatusResponse:
    return JobStatusResponse(
        job_id=record.job_id,
        function=record.function,
        status=JobStatus(record.status),
        priority=record.priority,
        progress=record.progress,
        message=record.message,
        tries=record.tries,
        enqueued_at=record.enqueued_at,
        scheduled_for=record.scheduled_for,
        started_at=record.started_at,
        finished_at=record.finished_at,
        result=record.result,
        error=JobError(**record.error) if record.error else None,
        aborted_by=record.abort_requested_by,
        abort_requested_at=record.abort_requested_at,
        attempts=record.attempts or [],
        notify_url=record.notify_url,
        notification_job_id=record.notification_job_id,
        request_id=record.request_id,
        on_dependency_failure=record.on_dependency_failure,
    )
