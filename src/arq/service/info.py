"""The queue as a whole: its depth and recent history, the service's health, the task list."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from src.arq import history, history_counts, keys, workers
from src.arq.outcome import now_utc
from src.arq.schemas import (
    CircuitBreakerHealth,
    HealthDetails,
    HealthQueueInfo,
    HealthResponse,
    JobStatus,
    QueueInfo,
    TaskInfo,
)
from src.arq.service.core import WORKER_LIVE_SECONDS, BreakerRead, ServiceBase
from src.arq.workers import LiveWorker
from src.auth.schemas import Principal, Role

logger = logging.getLogger("src.arq.service")


@dataclass(frozen=True, slots=True)
class QueueGauges:
    """The queue as monitoring reads it at scrape time."""

    waiting: dict[tuple[str, str], int]  # (ready | deferred | blocked, priority) -> jobs (history)
    in_progress: int  # jobs workers hold right now (Redis)
    workers: int  # workers with a heartbeat in the last WORKER_LIVE_SECONDS (Redis)
    oldest_ready_age_seconds: float  # how long the longest-waiting ready job has waited (0: none)
    dead_letters: int  # failed jobs on record


class InfoMixin(ServiceBase):
    """Queue depth, health and the tasks a caller may enqueue."""

    async def queue_gauges(self) -> QueueGauges:
        """Queue depth by state and priority, work in progress, live workers, the oldest ready
        job's wait and the dead letters: a few indexed reads, for a Prometheus scrape."""
        now_ms = int(time.time() * 1000)
        queue = self.settings.queue_name
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.running_set(queue))
            pipe.zcount(keys.workers_set(queue), now_ms - int(WORKER_LIVE_SECONDS * 1000), "+inf")
            running, workers = await pipe.execute()
        async with self.sessionmaker() as session:
            waiting = await history_counts.waiting_by_priority(session)
            oldest = await history_counts.oldest_ready_since(session)
            dead = await history_counts.count_with_status(session, JobStatus.FAILED)
        age = max(0.0, now_ms / 1000 - oldest.timestamp()) if oldest is not None else 0.0
        return QueueGauges(
            waiting=waiting,
            in_progress=int(running),
            workers=int(workers),
            oldest_ready_age_seconds=age,
            dead_letters=dead,
        )

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
            blocked = await history_counts.count_with_status(session, JobStatus.WAITING)
        return QueueInfo(
            queue_name=queue,
            queued=max(0, ready - running),
            deferred=deferred,
            in_progress=running,
            waiting=blocked,
            by_function=by_function,
            workers=workers,
            completed_last_hour=finished.get(JobStatus.COMPLETE, 0),
            failed_last_hour=finished.get(JobStatus.FAILED, 0),
        )

    async def live_workers(self) -> list[LiveWorker]:
        """The workers with a recent heartbeat: id, host, jobs running, last heartbeat and
        their schedules' next runs (what each announced; see `src.arq.workers`)."""
        return await workers.live_workers(
            self.redis, self.settings.queue_name, live_ms=int(WORKER_LIVE_SECONDS * 1000)
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
                circuit_breakers=await self._circuit_breakers() if redis_ok else [],
            ),
        )

    def add_circuit_breakers(self, read: BreakerRead) -> None:
        """Show the circuit breakers `read` returns in the health details (a package's own: VK,
        webhook hosts). An open circuit does not make the service unhealthy: jobs wait."""
        self._breaker_reads.append(read)

    async def _circuit_breakers(self) -> list[CircuitBreakerHealth]:
        found: list[CircuitBreakerHealth] = []
        for read in self._breaker_reads:
            try:
                async with asyncio.timeout(2):
                    found += await read()
            except (RedisError, OSError, TimeoutError):
                logger.warning("circuit breakers left out of the health", exc_info=True)
        return found

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
