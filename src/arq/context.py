"""What a task receives: the worker context, typed, with a per-job progress reporter.

The job module's own resources are fields of `WorkerContext`. A domain's resources (clients,
caches, settings) are put there by its start-up hook under a typed key of its own, a
`Resource`, and read back through the same key:

    VK_CLIENT: Resource[VKClient] = Resource("vk_client")

    @tasks.on_worker_startup
    async def open_vk_client(ctx: WorkerContext) -> None:
        provide(ctx, VK_CLIENT, VKClient(...))

    @tasks.task(args=ParseArgs)
    async def parse(ctx: JobContext, args: ParseArgs) -> ...:
        client = VK_CLIENT.get(ctx)  # a VKClient
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Generic, TypedDict, TypeVar, cast, overload

from arq.connections import ArqRedis
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from src.arq import history
from src.arq.config import ArqSettings
from src.arq.events import EventKind, JobEvent, JobEvents

logger = logging.getLogger(__name__)

ProgressReporter = Callable[[float, str | None], Awaitable[None]]
MessageReporter = Callable[[str], Awaitable[None]]


class WorkerContext(TypedDict):
    """Built once per worker process in `on_startup`."""

    redis: ArqRedis
    arq_settings: ArqSettings
    # The database the worker's jobs use (backups dump it), and sessions on it.
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    worker_id: str
    # The worker's lifecycle events (`src.arq.events`): progress is published there.
    events: JobEvents


class JobContext(WorkerContext):
    """The worker context plus what ARQ adds for one job, and `progress`."""

    job_id: str
    job_try: int
    enqueue_time: datetime
    score: int
    progress: ProgressReporter
    report: MessageReporter


T = TypeVar("T")
D = TypeVar("D")
_MISSING: Any = object()


class MissingResource(LookupError):
    """A task read a resource that no start-up hook put into the worker context."""


class Resource(Generic[T]):
    """A typed key of the worker context, declared by the domain that provides the resource:
    `provide(ctx, KEY, value)` in its start-up hook, `KEY.get(ctx)` in its tasks."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if name in JobContext.__required_keys__ | JobContext.__optional_keys__:
            raise ValueError(f"{name!r} is the job module's own context key")
        self.name = name

    @overload
    def get(self, ctx: Mapping[str, object]) -> T: ...

    @overload
    def get(self, ctx: Mapping[str, object], default: D) -> T | D: ...

    def get(self, ctx: Mapping[str, object], default: object = _MISSING) -> object:
        """The resource in `ctx`; `default` (or `MissingResource`, naming it) when its start-up
        hook did not run, like `ContextVar.get`."""
        if self.name in ctx:
            return ctx[self.name]
        if default is _MISSING:
            raise MissingResource(
                f"the worker context has no {self.name!r}: the start-up hook that provides it "
                "did not run (is its package's task registry the worker's?)"
            )
        return default

    def __repr__(self) -> str:
        return f"Resource({self.name!r})"


def provide(ctx: WorkerContext, key: Resource[T], value: T) -> None:
    """Put a domain's resource into the worker context (in its start-up hook)."""
    cast(dict[str, object], ctx)[key.name] = value


def bind_progress(ctx: dict[str, Any], function: str | None = None) -> JobContext:
    """Add `progress(percent, message)` and `report(message)` for this job (of task
    `function`) to its context (ARQ makes one context dict per job)."""
    job_id: str = ctx["job_id"]
    sessionmaker: async_sessionmaker[AsyncSession] = ctx["sessionmaker"]
    events: JobEvents = ctx.get("events") or JobEvents(ctx["redis"])

    async def after_start() -> None:
        writer = ctx.get("history_writer")
        if writer is not None:
            await writer.start_written(job_id)

    async def progress(percent: float, message: str | None = None) -> None:
        value = max(0, min(100, round(percent)))
        await after_start()
        try:
            async with sessionmaker.begin() as session:
                await history.set_progress(session, job_id, value, message)
        except (SQLAlchemyError, OSError):
            # Progress is informative; losing one update must not fail the job.
            logger.warning("could not record progress of job %s", job_id, exc_info=True)
            return
        await events.publish(
            [JobEvent(EventKind.PROGRESS, job_id, function, progress=value, message=message)]
        )

    async def report(message: str) -> None:
        await after_start()
        try:
            async with sessionmaker.begin() as session:
                await history.set_message(session, job_id, message)
        except (SQLAlchemyError, OSError):
            logger.warning("could not record the message of job %s", job_id, exc_info=True)
            return
        await events.publish([JobEvent(EventKind.PROGRESS, job_id, function, message=message)])

    ctx["progress"] = progress
    ctx["report"] = report
    return cast(JobContext, ctx)
