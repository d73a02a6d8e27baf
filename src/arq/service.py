"""The job module's logic: enqueue, status, result, abort, listings, queue info. No HTTP here.

The history table is the record a user can query forever; Redis holds the live queue. Status is
read from the table and, while a job is not finished there, refined from ARQ's keys in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from arq.connections import ArqRedis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq import history, keys
from src.arq.config import ArqSettings
from src.arq.exceptions import (
    InvalidJobArguments,
    JobConflict,
    JobNotFound,
    RateLimited,
    TaskForbidden,
)
from src.arq.models import JobRecord
from src.arq.outcome import (
    datetime_to_ms,
    ms_to_datetime,
    now_ms,
    now_utc,
    outcome_from_result,
)
from src.arq.pool import create_redis
from src.arq.queue import PRIORITY_LEVEL, JobQueue, QueuedJob
from src.arq.recording import announce
from src.arq.registry import TaskRegistry, TaskSpec
from src.arq.schemas import (
    EnqueueRequest,
    EnqueueResponse,
    HealthDetails,
    HealthQueueInfo,
    HealthResponse,
    JobError,
    JobPage,
    JobResultResponse,
    JobStatus,
    JobStatusResponse,
    JobSummary,
    Priority,
    QueueInfo,
    TaskInfo,
)
from src.arq.serialization import deserialize
from src.arq.tasks import registry as default_registry
from src.auth.schemas import Principal, Role
from src.config import Settings, get_settings, load
from src.database import create_engine, create_sessionmaker
from src.exceptions import ServiceUnavailable

logger = logging.getLogger(__name__)

SYSTEM = Principal(owner="system", role=Role.ADMIN)
# Ids of the system's own jobs (schedules, completion webhooks); no client id may take them.
RESERVED_ID_PREFIXES = ("cron:", "notify-")
WORKER_HEARTBEAT_SECONDS = 5.0
WORKER_LIVE_SECONDS = 3 * WORKER_HEARTBEAT_SECONDS
# The task that carries completion webhooks, and the template of their body.
NOTIFY_TASK = "send_notification"
NOTIFY_TEMPLATE = "job_finished"
NOTIFY_PAGE = 500


@dataclass(frozen=True, slots=True)
class _Prepared:
    spec: TaskSpec
    job_id: str
    kwargs: dict[str, Any]
    priority: Priority
    run_at_ms: int
    status: JobStatus
    owner: str
    notify_url: str | None = None
    notify_secret: str | None = None


class ArqService:
    """Enqueue and follow jobs. Every call names the caller (`principal`); the default is SYSTEM."""

    def __init__(
        self,
        *,
        redis: ArqRedis,
        sessionmaker: async_sessionmaker[AsyncSession],
        registry: TaskRegistry,
        settings: ArqSettings,
        api_prefix: str = "/api/v1/arq",
    ) -> None:
        self.redis = redis
        self.sessionmaker = sessionmaker
        self.registry = registry
        self.settings = settings
        self.api_prefix = api_prefix
        self.queue = JobQueue.for_settings(redis, settings)
        # Used while Redis is unreachable, so that the enqueue limit never fails open.
        self._local_limits = LocalRateLimiter()

    # -- enqueue ---------------------------------------------------------------------------

    async def enqueue_job(
        self,
        function_name: str,
        *args: Any,
        _job_id: str | None = None,
        _defer_by: float | timedelta | None = None,
        _defer_until: datetime | None = None,
        _priority: Priority | str = Priority.NORMAL,
        _principal: Principal = SYSTEM,
        _notify_url: str | None = None,
        _notify_secret: str | None = None,
        **kwargs: Any,
    ) -> EnqueueResponse:
        """Python API: `await arq_service.enqueue_job("ping", message="hi")`, validated as REST
        (`_notify_url`/`_notify_secret`: a completion webhook)."""
        defer_by = _defer_by.total_seconds() if isinstance(_defer_by, timedelta) else _defer_by
        request = EnqueueRequest(
            function_name=function_name,
            args=list(args),
            kwargs=kwargs,
            job_id=_job_id,
            defer_by=defer_by,
            defer_until=_defer_until,
            priority=Priority(_priority),
            notify_url=_notify_url,
            notify_secret=_notify_secret,
        )
        return await self.enqueue(request, principal=_principal)

    async def enqueue(self, request: EnqueueRequest, *, principal: Principal) -> EnqueueResponse:
        """Validate and queue one job."""
        now_ms = int(time.time() * 1000)
        prepared = self._prepare(request, principal=principal, now_ms=now_ms)
        return (await self._enqueue_prepared([prepared], principal=principal, now_ms=now_ms))[0]

    async def enqueue_batch(
        self, requests: Sequence[EnqueueRequest], *, principal: Principal
    ) -> list[EnqueueResponse]:
        """Validate every job first; queue all of them or none."""
        limit = self.settings.batch_max_jobs
        if len(requests) > limit:
            which = (
                "ARQ_ENQUEUE_RATE_LIMIT" if limit < self.settings.batch_limit else "ARQ_BATCH_LIMIT"
            )
            raise InvalidJobArguments(
                f"a batch holds at most {limit} jobs ({which}), got {len(requests)}",
                [{"loc": ["body"], "msg": f"at most {limit} items ({which})", "type": "too_long"}],
            )
        now_ms = int(time.time() * 1000)
        prepared = [
            self._prepare(request, principal=principal, now_ms=now_ms, loc=("body", index))
            for index, request in enumerate(requests)
        ]
        seen: set[str] = set()
        for index, item in enumerate(prepared):
            if item.job_id in seen:
                raise JobConflict(
                    f"job_id {item.job_id!r} appears twice in the batch (item {index})"
                )
            seen.add(item.job_id)
        return await self._enqueue_prepared(prepared, principal=principal, now_ms=now_ms)

    def _prepare(
        self,
        request: EnqueueRequest,
        *,
        principal: Principal,
        now_ms: int,
        loc: tuple[Any, ...] = ("body",),
    ) -> _Prepared:
        spec = self.registry.get(request.function_name, loc=".".join(map(str, loc)))
        if spec.role is Role.ADMIN and not principal.is_admin:
            raise TaskForbidden(f"task {spec.name!r} needs the admin role")
        self._check_priority(request.priority, principal)
        kwargs = spec.validate_args(
            request.args, request.kwargs, loc_prefix=loc, max_bytes=self.settings.max_args_bytes
        )
        if request.notify_url is not None and NOTIFY_TASK not in self.registry:
            raise InvalidJobArguments(
                "notify_url: completion webhooks need the send_notification task",
                [
                    {
                        "loc": [*loc, "notify_url"],
                        "msg": "completion webhooks need the send_notification task",
                        "type": "unsupported",
                    }
                ],
            )
        if request.defer_until is not None:
            # A time in the past means "now": ARQ derives key expiry from the score.
            score = max(now_ms, datetime_to_ms(request.defer_until))
        elif request.defer_by:
            score = now_ms + int(request.defer_by * 1000)
        else:
            score = now_ms
        return _Prepared(
            spec=spec,
            job_id=self._job_id(request.job_id, principal, loc=loc),
            kwargs=kwargs,
            priority=request.priority,
            run_at_ms=score,
            status=JobStatus.DEFERRED if score > now_ms else JobStatus.QUEUED,
            owner=principal.owner,
            notify_url=request.notify_url,
            notify_secret=request.notify_secret,
        )

    def _check_priority(self, priority: Priority, principal: Principal) -> None:
        ceiling = self.settings.user_max_priority
        if not principal.is_admin and PRIORITY_LEVEL[priority] > PRIORITY_LEVEL[ceiling]:
            raise TaskForbidden(
                f"priority {priority.value!r} needs the admin role; users may ask for up to "
                f"{ceiling.value!r} (ARQ_USER_MAX_PRIORITY)"
            )

    def _job_id(self, requested: str | None, principal: Principal, *, loc: tuple[Any, ...]) -> str:
        """The id a job is stored under. A client's own id lives in its owner's namespace, so
        it can never collide with another owner's job or a system job (schedules, webhooks)."""
        if requested is None:
            return uuid.uuid4().hex
        if requested.lower().startswith(RESERVED_ID_PREFIXES):
            raise InvalidJobArguments(
                f"job_id: {requested!r} starts with a prefix reserved for the system's jobs",
                [
                    {
                        "loc": [*loc, "job_id"],
                        "msg": "must not start with "
                        + ", ".join(repr(p) for p in RESERVED_ID_PREFIXES),
                        "type": "reserved",
                    }
                ],
            )
        if principal == SYSTEM:
            return requested
        return owner_job_id(principal.owner, requested)

    async def enqueue_scheduled(
        self, task: str, kwargs: dict[str, Any], *, slot: str, run_at: datetime
    ) -> str | None:
        """Queue a schedule's run under the id `slot` (the system's, not a client's); the id it
        runs under, or None when another worker has queued this run already. A slot held by
        anything else is logged and the run goes ahead under an id of its own."""
        spec = self.registry.get(task)
        now = now_ms()
        run_ms = max(now, datetime_to_ms(run_at))
        for job_id in (slot, f"{slot}:{uuid.uuid4().hex[:8]}"):
            item = _Prepared(
                spec=spec,
                job_id=job_id,
                kwargs=kwargs,
                priority=Priority.NORMAL,
                run_at_ms=run_ms,
                status=JobStatus.DEFERRED if run_ms > now else JobStatus.QUEUED,
                owner=SYSTEM.owner,
            )
            try:
                await self._enqueue_prepared([item], principal=SYSTEM, now_ms=now, charge=False)
                return job_id
            except JobConflict:
                async with self.sessionmaker() as session:
                    existing = await history.get(session, job_id)
                if existing and existing.function == spec.name and existing.owner == SYSTEM.owner:
                    return None  # this run is queued (by another worker at the same tick)
                logger.warning(
                    "the slot %s of the schedule of %s is taken by another job; "
                    "the run goes ahead under an id of its own",
                    job_id,
                    spec.name,
                )
        return None

    async def _enqueue_prepared(
        self, items: list[_Prepared], *, principal: Principal, now_ms: int, charge: bool = True
    ) -> list[EnqueueResponse]:
        ids = [item.job_id for item in items]
        if charge:
            await self._charge_rate_limit(principal.owner, len(items))
        rows = [self._history_row(item, now_ms=now_ms) for item in items]
        try:
            async with self.sessionmaker.begin() as session:
                inserted = await history.insert_new(session, rows)
                if len(inserted) < len(rows):
                    # Leaving the block with the error rolls the whole request back.
                    taken = next(job_id for job_id in ids if job_id not in inserted)
                    raise await self._conflict(session, taken, principal)
        except JobConflict:
            if charge:
                await self._refund_rate_limit(principal.owner, len(items))
            raise
        try:
            await self._push(items, now_ms=now_ms)
        except JobConflict:
            async with self.sessionmaker.begin() as session:
                await history.remove(session, ids)
            raise
        except (RedisError, OSError) as exc:
            # Accepted all the same: the jobs wait in the history and a worker's reconciliation
            # queues them once Redis answers again.
            logger.warning(
                "Redis is unreachable (%s): %d job(s) wait in the database until it returns",
                type(exc).__name__,
                len(items),
            )
        return [
            EnqueueResponse(
                job_id=item.job_id,
                function=item.spec.name,
                status=item.status,
                status_url=f"{self.api_prefix}/status/{item.job_id}",
                result_url=f"{self.api_prefix}/result/{item.job_id}",
            )
            for item in items
        ]

    def _history_row(self, item: _Prepared, *, now_ms: int) -> dict[str, Any]:
        return {
            "job_id": item.job_id,
            "function": item.spec.name,
            "queue_name": self.settings.queue_name,
            "args": item.kwargs,
            "owner": item.owner,
            "priority": item.priority.value,
            "status": item.status.value,
            "progress": 0,
            "tries": 0,
            # Millisecond precision, like ARQ's own enqueue and start times: they compare sanely.
            "enqueued_at": ms_to_datetime(now_ms),
            "scheduled_for": ms_to_datetime(item.run_at_ms),
            "notify_url": item.notify_url,
            "notify_secret": item.notify_secret,
        }

    async def _conflict(
        self, session: AsyncSession, job_id: str, principal: Principal
    ) -> JobConflict:
        owner = (await history.existing_ids(session, [job_id])).get(job_id)
        if principal.is_admin or owner == principal.owner:
            return JobConflict(
                f"job_id {job_id!r} is already in use",
                status_url=f"{self.api_prefix}/status/{job_id}",
                job_id=job_id,
            )
        # Only the system's own ids are outside the caller's namespace: say nothing about it.
        return JobConflict(f"job_id {job_id!r} is already in use", job_id=job_id)

    async def _refund_rate_limit(self, owner: str, count: int) -> None:
        if self.settings.enqueue_rate_limit == 0:
            return
        try:
            await self.redis.decrby(keys.rate_limit(owner, int(time.time() // 60)), count)
        except (RedisError, OSError):
            self._local_limits.refund(owner, count)

    async def _charge_rate_limit(self, owner: str, count: int) -> None:
        """Count `count` jobs against the owner's per-minute limit (shared through Redis; while
        Redis is unreachable, counted per process instead: the limit never fails open)."""
        limit = self.settings.enqueue_rate_limit
        if limit == 0:
            return
        now = time.time()
        window = int(now // 60)
        key = keys.rate_limit(owner, window)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incrby(key, count)
                pipe.expire(key, 120)
                used, _ = await pipe.execute()
            if used > limit:
                await self.redis.decrby(key, count)
        except (RedisError, OSError):
            used = self._local_limits.charge(owner, window, count, limit=limit)
        if used > limit:
            raise RateLimited(retry_after=max(1, 60 - int(now % 60)))

    async def _push(self, items: list[_Prepared], *, now_ms: int) -> None:
        jobs = _queued_jobs(items, now_ms=now_ms)
        outcomes = await self.queue.push(jobs, now_ms=now_ms, wake=self.settings.wake_on_enqueue)
        refused = [job.job_id for job, ok in zip(jobs, outcomes, strict=True) if not ok]
        if refused:
            # ARQ still holds a job or result under this id (history cleaned before Redis expired).
            await self._drop_from_redis(
                [job.job_id for job, ok in zip(jobs, outcomes, strict=True) if ok]
            )
            raise JobConflict(
                f"job_id {refused[0]!r} is still held by the queue", job_id=refused[0]
            )

    async def _drop_from_redis(self, ids: list[str]) -> None:
        if not ids:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.settings.queue_name, *ids)
            pipe.delete(*(keys.job_key_prefix + job_id for job_id in ids))
            await pipe.execute()

    # -- reading ---------------------------------------------------------------------------

    async def get_job_status(
        self, job_id: str, *, principal: Principal = SYSTEM
    ) -> JobStatusResponse:
        """Where the job stands; 404 if it does not exist or belongs to someone else."""
        record = await self._visible_record(job_id, principal)
        return _status_response(await self._refresh(record))

    async def get_job_result(
        self, job_id: str, *, principal: Principal = SYSTEM
    ) -> JobResultResponse | JobStatusResponse:
        """The result of a finished job, or its status while it is not finished."""
        record = await self._refresh(await self._visible_record(job_id, principal))
        status = JobStatus(record.status)
        if not status.finished:
            return _status_response(record)
        return JobResultResponse(
            job_id=record.job_id,
            function=record.function,
            status=status,
            success=status is JobStatus.COMPLETE,
            result=record.result,
            error=JobError(**record.error) if record.error else None,
            finished_at=record.finished_at,
        )

    async def _visible_record(self, job_id: str, principal: Principal) -> JobRecord:
        async with self.sessionmaker() as session:
            record = await history.get(session, job_id)
        if record is None or not (principal.is_admin or record.owner == principal.owner):
            raise JobNotFound(job_id)
        return record

    async def _refresh(self, record: JobRecord) -> JobRecord:
        """Bring a not-finished record up to date with Redis (and write a found ending back)."""
        if JobStatus(record.status).finished:
            return record
        job_id = record.job_id
        try:
            (state,) = await self.queue.state([job_id])
        except (RedisError, OSError):
            return record  # Redis is down: the history is the best there is.
        raw_result, running, score = state.raw_result, state.running, state.score
        if raw_result:
            outcome = outcome_from_result(
                deserialize(raw_result), aborted_by=record.abort_requested_by
            )
            async with self.sessionmaker.begin() as session:
                await history.mark_finished(
                    session,
                    job_id,
                    status=outcome.status,
                    at=outcome.finished_at,
                    tries=outcome.tries,
                    started_at=outcome.started_at,
                    result=outcome.result,
                    error=outcome.error,
                )
                fresh = await history.get(session, job_id)
            with contextlib.suppress(RedisError, OSError):
                await self.queue.expire_results(
                    [job_id], keep_ms=int(self.settings.keep_result * 1000)
                )
            if record.notify_url is not None:
                await self._dispatch_quietly(job_id)
            return fresh or record
        if running:
            record.status = JobStatus.IN_PROGRESS.value
            record.tries = max(record.tries, state.tries)  # ARQ counts the try before we record it
        elif score is not None:
            waiting = score > time.time() * 1000
            if waiting:
                record.scheduled_for = ms_to_datetime(score)  # a ready job's score has an offset
            if record.tries > 0:
                record.status = JobStatus.RETRYING.value
            else:
                record.status = (JobStatus.DEFERRED if waiting else JobStatus.QUEUED).value
        return record

    async def list_jobs(
        self,
        *,
        principal: Principal,
        status: JobStatus | None = None,
        function: str | None = None,
        owner: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> JobPage:
        """The caller's jobs (an admin's: everyone's, or `owner`'s), newest first."""
        owner_filter = owner if principal.is_admin else principal.owner
        async with self.sessionmaker() as session:
            rows, total = await history.page(
                session,
                owner=owner_filter,
                status=status,
                function=function,
                limit=limit,
                offset=offset,
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

    # -- abort -----------------------------------------------------------------------------

    async def abort_job(self, job_id: str, *, principal: Principal = SYSTEM) -> JobStatusResponse:
        """Stop a job: a waiting one never runs, a running one is cancelled; 409 if finished."""
        record = await self._refresh(await self._visible_record(job_id, principal))
        if JobStatus(record.status).finished:
            raise JobConflict(f"job {job_id!r} is already {record.status}", job_id=job_id)
        now = now_utc()
        async with self.sessionmaker.begin() as session:
            await history.request_abort(session, job_id, by=principal.owner, at=now)
        try:
            removed = await self.queue.abort(job_id, now_ms=datetime_to_ms(now))
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"Redis is unreachable: {type(exc).__name__}") from None
        if removed == 1:
            await self._record_abort(job_id, principal, at=now, before_start=True)
            return await self.get_job_status(job_id, principal=principal)
        if removed == -1:
            # Neither queued nor running. If ARQ wrote an ending meanwhile, `_refresh` finds it;
            # otherwise the job is gone from Redis and is recorded as aborted now.
            record = await self._refresh(record)
            if not JobStatus(record.status).finished:
                await self._record_abort(job_id, principal, at=now, before_start=False)
        # Running (removed == 0): ARQ's worker cancels it on its next loop, within a poll delay.
        deadline = time.monotonic() + self.settings.abort_wait
        while True:
            status = await self.get_job_status(job_id, principal=principal)
            if status.status.finished or time.monotonic() >= deadline:
                return status
            await asyncio.sleep(0.05)

    async def _record_abort(
        self, job_id: str, principal: Principal, *, at: datetime, before_start: bool
    ) -> None:
        when = " before it started" if before_start else ""
        async with self.sessionmaker.begin() as session:
            await history.mark_finished(
                session,
                job_id,
                status=JobStatus.ABORTED,
                at=at,
                error={"type": "JobAborted", "message": f"aborted by {principal.owner}{when}"},
            )
        await announce(self.redis, job_id)
        await self._dispatch_quietly(job_id)

    # -- dead letters ----------------------------------------------------------------------

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

    async def retry_job(self, job_id: str, *, principal: Principal = SYSTEM) -> JobStatusResponse:
        """Queue a failed or aborted job again under its id, as a new round with fresh tries."""
        record = await self._refresh(await self._visible_record(job_id, principal))
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
        async with self.sessionmaker.begin() as session:
            if not await history.requeue(session, job_id, at=ms_to_datetime(now), attempt=attempt):
                raise JobConflict(f"job {job_id!r} changed meanwhile; try again", job_id=job_id)
        job = QueuedJob(
            job_id=job_id,
            function=record.function,
            kwargs=record.args,
            priority=Priority(record.priority),
            run_at_ms=now,
            enqueued_ms=now,
            owner=record.owner,
        )
        try:
            await self.queue.push([job], now_ms=now, wake=self.settings.wake_on_enqueue)
        except (RedisError, OSError):
            logger.warning("Redis is unreachable: retried job %s waits in the database", job_id)
        await announce(self.redis, job_id)
        return await self.get_job_status(job_id, principal=principal)

    # -- completion webhooks ---------------------------------------------------------------

    async def dispatch_notifications(self, job_ids: Sequence[str] | None = None) -> list[str]:
        """Queue the completion webhook of every finished job that asked for one and has none
        queued yet (of `job_ids`, or all of them); the ids of the jobs served.

        Called where endings are recorded (the worker's history writer, an abort, a status read
        that finds an ending) and by the periodic sweep, which catches what a crash between the
        ending and this call left behind. The webhook job's id is derived from the ending and is
        inserted in the transaction that records it, so two callers never send one ending twice.
        """
        if NOTIFY_TASK not in self.registry:
            return []
        spec = self.registry.get(NOTIFY_TASK)
        served: list[str] = []
        while True:
            async with self.sessionmaker() as session:
                records = await history.pending_notifications(
                    session, job_ids=job_ids, limit=NOTIFY_PAGE
                )
            if not records:
                return served
            await self._queue_notifications(spec, records)
            served.extend(record.job_id for record in records)
            if len(records) < NOTIFY_PAGE:
                return served

    async def _queue_notifications(self, spec: TaskSpec, records: list[JobRecord]) -> None:
        now = now_ms()
        chosen: dict[str, str] = {}
        rows: list[dict[str, Any]] = []
        items: list[_Prepared] = []
        for record in records:
            notify_id = notification_job_id(record)
            try:
                kwargs = spec.validate_args([], _notification_kwargs(record))
            except InvalidJobArguments as exc:
                # Checked at enqueue, so only a row written by other means gets here; mark it
                # so the sweep does not read it again and again.
                logger.warning("job %s: completion webhook not sent: %s", record.job_id, exc)
                chosen[record.job_id] = "invalid"
                continue
            item = _Prepared(
                spec=spec,
                job_id=notify_id,
                kwargs=kwargs,
                priority=Priority(record.priority),
                run_at_ms=now,
                status=JobStatus.QUEUED,
                owner=record.owner,
            )
            chosen[record.job_id] = notify_id
            items.append(item)
            rows.append(self._history_row(item, now_ms=now))
        async with self.sessionmaker.begin() as session:
            inserted = await history.insert_new(session, rows) if rows else set()
            await history.set_notification_jobs(session, chosen)
        jobs = _queued_jobs([item for item in items if item.job_id in inserted], now_ms=now)
        if jobs:
            try:
                await self.queue.push(jobs, now_ms=now, wake=self.settings.wake_on_enqueue)
            except (RedisError, OSError):
                # On record all the same: the reconciliation queues them once Redis answers.
                logger.warning("Redis is unreachable: %d webhook job(s) wait", len(jobs))
        await announce(self.redis, *chosen)

    async def _dispatch_quietly(self, job_id: str) -> None:
        """`dispatch_notifications` for one job whose ending was just recorded; a failure is
        left to the sweep."""
        try:
            await self.dispatch_notifications([job_id])
        except (SQLAlchemyError, RedisError, OSError):
            logger.warning("could not queue the webhook of job %s; the sweep will", job_id)

    # -- queue and health ------------------------------------------------------------------

    async def queue_info(self) -> QueueInfo:
        """Queue depth from the sorted sets, history counts from the table's indexes."""
        now_ms = int(time.time() * 1000)
        queue = self.settings.queue_name
        running_key = keys.running_set(queue)
        stale_before = now_ms - int((self._longest_timeout() + 60) * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(running_key, "-inf", stale_before)
            pipe.zcount(queue, "-inf", now_ms)
            pipe.zcount(queue, f"({now_ms}", "+inf")
            pipe.zcard(running_key)
            pipe.zcount(keys.workers_set(queue), now_ms - int(WORKER_LIVE_SECONDS * 1000), "+inf")
            _, ready, deferred, running, workers = await pipe.execute()
        since = now_utc() - timedelta(hours=1)
        async with self.sessionmaker() as session:
            by_function = await history.active_by_function(session)
            finished = await history.finished_since(session, since)
        return QueueInfo(
            queue_name=queue,
            queued=max(0, ready - running),
            deferred=deferred,
            in_progress=running,
            by_function=by_function,
            workers=workers,
            completed_last_hour=finished.get(JobStatus.COMPLETE, 0),
            failed_last_hour=finished.get(JobStatus.FAILED, 0),
        )

    def _longest_timeout(self) -> float:
        return max([self.settings.job_timeout, *(s.timeout for s in self.registry if s.timeout)])

    async def health(self) -> HealthResponse:
        """Whether Redis and the database answer, with live workers and queue depth."""
        redis_ok, workers, queued = False, None, None
        now_ms = int(time.time() * 1000)
        try:
            async with asyncio.timeout(2):
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.ping()
                    pipe.zcount(
                        keys.workers_set(self.settings.queue_name),
                        now_ms - int(WORKER_LIVE_SECONDS * 1000),
                        "+inf",
                    )
                    pipe.zcount(self.settings.queue_name, "-inf", now_ms)
                    pipe.zcard(keys.running_set(self.settings.queue_name))
                    _, workers, ready, running = await pipe.execute()
                    queued = max(0, ready - running)
            redis_ok = True
        except (RedisError, OSError, TimeoutError):
            pass
        database_ok = False
        try:
            async with asyncio.timeout(3), self.sessionmaker() as session:
                await session.execute(select(1))
            database_ok = True
        except (SQLAlchemyError, OSError, TimeoutError):
            pass
        return HealthResponse(
            healthy=redis_ok and database_ok,
            timestamp=now_utc(),
            details=HealthDetails(
                redis_connected=redis_ok,
                database_connected=database_ok,
                workers=workers,
                queue_info=HealthQueueInfo(
                    queue_name=self.settings.queue_name, queued_jobs_count=queued
                ),
            ),
        )

    def tasks(self, *, principal: Principal) -> list[TaskInfo]:
        """The tasks this caller may enqueue, with their argument schemas."""
        return [
            TaskInfo(
                name=spec.name,
                description=spec.description,
                role=spec.role.value,
                timeout=spec.timeout,
                max_tries=spec.max_tries,
                args_schema=spec.args_model.model_json_schema(),
            )
            for spec in self.registry
            if principal.is_admin or spec.role is Role.USER
        ]


@asynccontextmanager
async def open_arq_service(
    *,
    settings: Settings | None = None,
    arq_settings: ArqSettings | None = None,
    registry: TaskRegistry | None = None,
) -> AsyncIterator[ArqService]:
    """An `ArqService` for scripts and other processes, closed on exit.

    `async with open_arq_service() as arq_service: await arq_service.enqueue_job("ping")`
    """
    settings = settings or get_settings()
    arq_settings = arq_settings or load(ArqSettings)
    engine = create_engine(settings.database_url, timeout=settings.database_timeout)
    redis = create_redis(
        settings.redis_url, queue_name=arq_settings.queue_name, timeout=settings.redis_timeout
    )
    try:
        yield ArqService(
            redis=redis,
            sessionmaker=create_sessionmaker(engine),
            registry=registry or default_registry,
            settings=arq_settings,
        )
    finally:
        await redis.aclose(close_connection_pool=True)
        await engine.dispose()


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
    )


def _queued_jobs(items: list[_Prepared], *, now_ms: int) -> list[QueuedJob]:
    return [
        QueuedJob(
            job_id=item.job_id,
            function=item.spec.name,
            kwargs=item.kwargs,
            priority=item.priority,
            run_at_ms=item.run_at_ms,
            enqueued_ms=now_ms,
            owner=item.owner,
        )
        for item in items
    ]


def owner_job_id(owner: str, job_id: str) -> str:
    """Where a client's own job id lives: `o<10 hex of the owner>:<id>`."""
    return f"o{hashlib.sha256(owner.encode()).hexdigest()[:10]}:{job_id}"


class LocalRateLimiter:
    """Per-process enqueue counters per owner and minute, for when Redis cannot count."""

    def __init__(self) -> None:
        self._used: dict[tuple[str, int], int] = {}

    def charge(self, owner: str, window: int, count: int, *, limit: int) -> int:
        """Count `count` jobs; the total including them (not counted if over `limit`)."""
        for key in [key for key in self._used if key[1] < window]:
            del self._used[key]  # earlier minutes
        used = self._used.get((owner, window), 0) + count
        if used <= limit:
            self._used[(owner, window)] = used
        return used

    def refund(self, owner: str, count: int) -> None:
        for key in self._used:
            if key[0] == owner:
                self._used[key] = max(0, self._used[key] - count)


def notification_job_id(record: JobRecord) -> str:
    """The id of the webhook job of this ending: the same for every caller, new per round."""
    finished = record.finished_at.isoformat() if record.finished_at else ""
    digest = hashlib.sha256(f"{record.job_id}|{finished}".encode()).hexdigest()
    return f"notify-{digest[:32]}"


def _notification_kwargs(record: JobRecord) -> dict[str, Any]:
    context: dict[str, Any] = {
        "job_id": record.job_id,
        "function": record.function,
        "status": record.status,
        "tries": record.tries,
        # A datetime: validating the arguments writes it as the API writes times.
        "finished_at": record.finished_at,
    }
    if record.error is not None:
        context["error"] = record.error
    else:
        context["result"] = record.result
    kwargs: dict[str, Any] = {
        "url": record.notify_url,
        "template": NOTIFY_TEMPLATE,
        "context": context,
    }
    if record.notify_secret:
        kwargs["secret"] = record.notify_secret
    return kwargs
