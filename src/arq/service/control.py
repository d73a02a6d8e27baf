"""Steering jobs: abort a waiting or running job, retry a failed or aborted one."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from redis.exceptions import RedisError

from src.arq import history
from src.arq.events import EventKind, JobEvent
from src.arq.exceptions import JobConflict, TaskForbidden
from src.arq.models import JobRecord
from src.arq.outcome import Outcome, datetime_to_ms, ms_to_datetime, now_ms, now_utc
from src.arq.queue import QueuedJob
from src.arq.schemas import JobStatus, JobStatusResponse, Priority
from src.arq.service.core import SYSTEM, ending_event, logger
from src.arq.service.dependencies import DependencyMixin
from src.auth.schemas import Principal, Role
from src.exceptions import ServiceUnavailable


class ControlMixin(DependencyMixin):
    """Abort and retry jobs."""

    async def abort_job(self, job_id: str, *, principal: Principal = SYSTEM) -> JobStatusResponse:
        """Stop a job: a waiting one never runs, a running one is cancelled; 409 if finished."""
        record = await self._refresh(await self._visible_record(job_id, principal))
        job_id = record.job_id  # the stored id (a client may name its own by the id it chose)
        if JobStatus(record.status).finished:
            raise JobConflict(f"job {job_id!r} is already {record.status}", job_id=job_id)
        now = now_utc()
        if record.status == JobStatus.WAITING.value and await self._abort_waiting(
            record, principal, at=now
        ):
            return await self.get_job_status(job_id, principal=principal)
        async with self.sessionmaker.begin() as session:
            await history.request_abort(session, job_id, by=principal.owner, at=now)
        try:
            removed = await self.queue.abort(job_id, now_ms=datetime_to_ms(now))
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"Redis is unreachable: {type(exc).__name__}") from None
        if removed == 1:
            await self._record_abort(record, principal, at=now, before_start=True)
            return await self.get_job_status(job_id, principal=principal)
        if removed == -1:
            # Neither queued nor running. If ARQ wrote an ending meanwhile, `_refresh` finds it;
            # otherwise the job is gone from Redis and is recorded as aborted now.
            record = await self._refresh(record)
            if not JobStatus(record.status).finished:
                await self._record_abort(record, principal, at=now, before_start=False)
        # Running (removed == 0): ARQ's worker cancels it on its next loop, within a poll delay.
        deadline = time.monotonic() + self.settings.abort_wait
        while True:
            status = await self.get_job_status(job_id, principal=principal)
            if status.status.finished or time.monotonic() >= deadline:
                return status
            await asyncio.sleep(0.05)

    async def _abort_waiting(
        self, record: JobRecord, principal: Principal, *, at: datetime
    ) -> bool:
        """Abort a job waiting for its dependencies (it is not in Redis); False if its
        dependencies released (or failed) it meanwhile."""
        async with self.sessionmaker.begin() as session:
            await history.request_abort(session, record.job_id, by=principal.owner, at=at)
        return await self._record_abort(
            record, principal, at=at, before_start=True, only_while=JobStatus.WAITING
        )

    async def _record_abort(
        self,
        record: JobRecord,
        principal: Principal,
        *,
        at: datetime,
        before_start: bool,
        only_while: JobStatus | None = None,
    ) -> bool:
        when = " before it started" if before_start else ""
        outcome = Outcome(
            status=JobStatus.ABORTED,
            result=None,
            error={"type": "JobAborted", "message": f"aborted by {principal.owner}{when}"},
            tries=None,
            started_at=None,
            finished_at=at,
        )
        async with self.sessionmaker.begin() as session:
            recorded = await history.mark_finished(
                session,
                record.job_id,
                status=outcome.status,
                at=at,
                error=outcome.error,
                only_while=only_while,
            )
        if recorded:
            await self.events.publish([ending_event(record, outcome)])
        return recorded

    async def retry_job(self, job_id: str, *, principal: Principal = SYSTEM) -> JobStatusResponse:
        """Queue a failed or aborted job again under its id, as a new round with fresh tries."""
        record = await self._refresh(await self._visible_record(job_id, principal))
        job_id = record.job_id  # the stored id (a client may name its own by the id it chose)
        status = JobStatus(record.status)
        if status not in (JobStatus.FAILED, JobStatus.ABORTED):
            raise JobConflict(
                f"only failed or aborted jobs can be retried; job {job_id!r} is {status.value}",
                job_id=job_id,
            )
        spec = self.registry.get(record.function)
        if spec.role is Role.ADMIN and not principal.is_admin:
            # Roles are checked now, not when the job was first queued: a demoted admin may not
            # re-run an admin task.
            raise TaskForbidden(f"task {spec.name!r} needs the admin role")
        self._check_priority(Priority(record.priority), principal)
        now = now_ms()
        attempt = {
            "status": record.status,
            "tries": record.tries,
            "error": record.error,
            "started_at": record.started_at.isoformat() if record.started_at else None,
            "finished_at": record.finished_at.isoformat() if record.finished_at else None,
            "retried_by": principal.owner,
        }
        try:
            # The old ending goes first: once the row says "queued", nothing may find that
            # ending in Redis and copy it back over the new round.
            await self.queue.forget_result(job_id)
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"Redis is unreachable: {type(exc).__name__}") from None
        # A job with dependencies waits for them again (they may have been retried too).
        waits = record.on_dependency_failure is not None
        async with self.sessionmaker.begin() as session:
            if not await history.requeue(
                session,
                job_id,
                at=ms_to_datetime(now),
                attempt=attempt,
                status=JobStatus.WAITING if waits else JobStatus.QUEUED,
            ):
                raise JobConflict(f"job {job_id!r} changed meanwhile; try again", job_id=job_id)
        if waits:
            await self.events.publish(
                [
                    JobEvent(
                        EventKind.ENQUEUED, job_id, record.function, record.owner, JobStatus.WAITING
                    )
                ]
            )
            await self.settle_waiting([job_id])
            return await self.get_job_status(job_id, principal=principal)
        job = QueuedJob(
            job_id=job_id,
            function=record.function,
            kwargs=record.args,
            priority=Priority(record.priority),
            run_at_ms=now,
            enqueued_ms=now,
            owner=record.owner,
            request_id=record.request_id,
        )
        try:
            await self.queue.push([job], now_ms=now, wake=self.settings.wake_on_enqueue)
        except (RedisError, OSError):
            logger.warning("Redis is unreachable: retried job %s waits in the database", job_id)
        await self.events.publish(
            [JobEvent(EventKind.ENQUEUED, job_id, record.function, record.owner, JobStatus.QUEUED)]
        )
        return await self.get_job_status(job_id, principal=principal)
