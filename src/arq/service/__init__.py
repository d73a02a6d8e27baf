"""The job module's logic: enqueue, status, result, abort, listings, queue info. No HTTP here.

The history table is the record a user can query forever; Redis holds the live queue. Status is
read from the table and, while a job is not finished there, refined from ARQ's keys in Redis.

`ArqService` is one mixin per concern on a shared base:
- `core`: the resources (Redis, database, registry, settings, queue, events) and shared helpers;
- `enqueue`: validate and queue jobs, one, a batch or a schedule's run;
- `rate_limit`: the per-owner enqueue limit;
- `status`: a job's status and result, listings, dead letters;
- `control`: abort and retry;
- `dependencies`: jobs that wait for other jobs (`depends_on`), released as those end;
- `follow_ups`: completion webhooks owed by endings, their follow-up jobs, sweeps;
- `info`: queue depth, health, the task list;
- `stats`: queue statistics (counts, success rate, durations) over a window.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq.config import ArqSettings
from src.arq.events import EventKind
from src.arq.pool import create_redis
from src.arq.registry import TaskRegistry
from src.arq.service.control import ControlMixin
from src.arq.service.core import (
    RESERVED_ID_PREFIXES,
    SYSTEM,
    WORKER_HEARTBEAT_SECONDS,
    WORKER_LIVE_SECONDS,
    Sweep,
    owner_job_id,
)
from src.arq.service.enqueue import EnqueueMixin
from src.arq.service.follow_ups import FollowUp, FollowUpMixin, JobEnding
from src.arq.service.info import InfoMixin, QueueGauges
from src.arq.service.rate_limit import LocalRateLimiter
from src.arq.service.stats import StatsMixin
from src.arq.service.status import StatusMixin
from src.config import Settings, get_settings, load
from src.database import create_engine, create_sessionmaker

__all__ = [
    "RESERVED_ID_PREFIXES",
    "SYSTEM",
    "WORKER_HEARTBEAT_SECONDS",
    "WORKER_LIVE_SECONDS",
    "ArqService",
    "FollowUp",
    "JobEnding",
    "LocalRateLimiter",
    "QueueGauges",
    "Sweep",
    "open_arq_service",
    "owner_job_id",
]


class ArqService(EnqueueMixin, StatusMixin, ControlMixin, FollowUpMixin, InfoMixin, StatsMixin):
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
        super().__init__(
            redis=redis,
            sessionmaker=sessionmaker,
            registry=registry,
            settings=settings,
            api_prefix=api_prefix,
        )
        # Endings release (or fail) the jobs waiting for them; a sweep catches up after a crash.
        self.events.subscribe(
            self._settle_dependents, kinds={EventKind.FINISHED, EventKind.ABORTED}
        )
        self.add_sweep(self.settle_all_waiting)
        # Packages subscribe to the lifecycle events and add their sweeps here.
        for install in registry.service_hooks:
            install(self)


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
    engine = create_engine(
        settings.database_url,
        timeout=settings.database_timeout,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
    )
    redis = create_redis(
        settings.redis_url, queue_name=arq_settings.queue_name, timeout=settings.redis_timeout
    )
    if registry is None:
        # The entry point for scripts: the app's own tasks (this loads every domain package).
        from src.arq.tasks import registry as app_registry

        registry = app_registry
    try:
        yield ArqService(
            redis=redis,
            sessionmaker=create_sessionmaker(engine),
            registry=registry,
            settings=arq_settings,
        )
    finally:
        await redis.aclose(close_connection_pool=True)
        await engine.dispose()
