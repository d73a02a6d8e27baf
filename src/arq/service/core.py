"""The job service's shared base: its resources and what several of its concerns use.

`ServiceBase` holds the Redis pool, the sessionmaker, the task registry, the settings, the queue,
the enqueue rate limit, the lifecycle events and the sweeps; it writes a job's first history row
and pushes jobs to Redis, finds the job a caller may see and brings a not-finished record up to
date with Redis. Each concern of `ArqService` is a mixin on this base (see the package).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arq.connections import ArqRedis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq import history, keys
from src.arq.config import ArqSettings
from src.arq.events import JobEvent, JobEvents
from src.arq.exceptions import JobConflict, JobNotFound
from src.arq.metrics import count_events
from src.arq.models import JobRecord
from src.arq.outcome import Outcome, ms_to_datetime, outcome_from_result
from src.arq.queue import JobQueue, QueuedJob
from src.arq.registry import TaskRegistry, TaskSpec
from src.arq.schemas import CircuitBreakerHealth, JobStatus, JobStatusResponse, Priority
from src.arq.serialization import deserialize
from src.arq.service.group_commit import GroupCommit
from src.arq.service.rate_limit import EnqueueRateLimit
from src.auth.schemas import Principal, Role

# One logger for the whole service, under the name it had as one module.
logger = logging.getLogger("src.arq.service")

SYSTEM = Principal(owner="system", role=Role.ADMIN)
# Ids of the system's own scheduled runs; no client id may take them (packages reserve more
# for their own follow-up jobs with `TaskRegistry.reserve_id_prefix`).
RESERVED_ID_PREFIXES = ("cron:",)
WORKER_HEARTBEAT_SECONDS = 5.0
WORKER_LIVE_SECONDS = 3 * WORKER_HEARTBEAT_SECONDS
Sweep = Callable[[], Awaitable[object]]
# Reads a package's circuit breakers for the health details.
BreakerRead = Callable[[], Awaitable[list[CircuitBreakerHealth]]]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated job about to be queued: its first history row and its place in Redis."""

    spec: TaskSpec
    job_id: str
    kwargs: dict[str, Any]
    priority: Priority
    run_at_ms: int
    status: JobStatus
    owner: str
    notify_url: str | None = None
    notify_secret: str | None = None
    # The X-Request-ID of the request that queues it (none for the system's own jobs).
    request_id: str | None = None
    # The stored ids of the jobs it waits for (then its status is "waiting"), and the policy.
    depends_on: tuple[str, ...] = ()
    on_dependency_failure: str | None = None


def owner_job_id(owner: str, job_id: str) -> str:
    """Where a client's own job id lives: `o<10 hex of the owner>:<id>`."""
    return f"o{hashlib.sha256(owner.encode()).hexdigest()[:10]}:{job_id}"


class ServiceBase:
    """The resources of the job service and the helpers its concerns share."""

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
        # The per-owner enqueue limit; it never fails open, not even while Redis is unreachable.
        self._rate_limit = EnqueueRateLimit(redis, settings)
        self.reserved_prefixes = (*RESERVED_ID_PREFIXES, *registry.reserved_prefixes)
        # Lifecycle events of this process; packages subscribe from their service hooks.
        self.events = JobEvents(redis)
        # Every job service counts its process' events for Prometheus (src.arq.metrics).
        self.events.subscribe(count_events)
        self._sweeps: list[Sweep] = []
        self._breaker_reads: list[BreakerRead] = []
        # Concurrent enqueues share their history transactions and Redis pipelines.
        self._group_commit = GroupCommit(sessionmaker, self.queue, wake=settings.wake_on_enqueue)

    if TYPE_CHECKING:
        # Owned by other concerns (enqueue, status) and used by more than their own.

        def _check_priority(self, priority: Priority, principal: Principal) -> None: ...

        async def get_job_status(
            self, job_id: str, *, principal: Principal = SYSTEM
        ) -> JobStatusResponse: ...

    def _history_row(self, item: Prepared, *, now_ms: int) -> dict[str, Any]:
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
            "request_id": item.request_id,
            "on_dependency_failure": item.on_dependency_failure,
        }

    async def _push(self, items: list[Prepared], *, now_ms: int) -> None:
        if not items:  # a batch of waiting jobs only: nothing goes to Redis yet
            return
        jobs = _queued_jobs(items, now_ms=now_ms)
        outcomes = await self._group_commit.push(jobs)
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

    async def _visible_record(self, job_id: str, principal: Principal) -> JobRecord:
        """The job `job_id` names for this caller: the job stored under that id, or the caller's
        own job they enqueued with that id (stored as `owner_job_id`); 404 for anything else."""
        async with self.sessionmaker() as session:
            # Reads only: no transaction around them (its BEGIN and ROLLBACK are round trips).
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            record = await history.get(session, job_id)
            if record is None or not principal.may_see(record.owner):
                record = await history.get(session, owner_job_id(principal.owner, job_id))
        if record is None or not principal.may_see(record.owner):
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
                recorded = await history.mark_finished(
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
            if recorded:
                await self.events.publish([ending_event(fresh or record, outcome)])
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


def _queued_jobs(items: list[Prepared], *, now_ms: int) -> list[QueuedJob]:
    return [
        QueuedJob(
            job_id=item.job_id,
            function=item.spec.name,
            kwargs=item.kwargs,
            priority=item.priority,
            run_at_ms=item.run_at_ms,
            enqueued_ms=now_ms,
            owner=item.owner,
            request_id=item.request_id,
        )
        for item in items
    ]


def ending_event(record: JobRecord, outcome: Outcome) -> JobEvent:
    """The lifecycle event of a job's recorded ending."""
    return JobEvent.ending(
        record.job_id,
        outcome,
        function=record.function,
        owner=record.owner,
        notify=history.owes_webhook(record),
    )
