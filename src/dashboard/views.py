"""What the pages show, gathered through the job service (no HTTP here, no table of its own).

Who sees what is the job service's rule (`Principal.may_see`, `owner_filter`): a user's
listings, statistics and dead letters are their own; an admin's are everyone's, or one owner's.
The queue's depth and the workers are the queue's, the same for everyone (as `/queue/info`).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from src.arq.exceptions import UnknownTask
from src.arq.schemas import (
    JobPage,
    JobStatus,
    JobStatusResponse,
    Priority,
    QueueInfo,
    QueueStats,
)
from src.arq.service import ArqService, QueueGauges
from src.arq.workers import LiveWorker
from src.auth.schemas import Principal, Role
from src.dashboard.charts import Bucket

# The periods of the job filters: label -> how far back (None: all).
PERIODS: dict[str, timedelta | None] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "all": None,
}
PERIOD_LABELS = {
    "1h": "last hour",
    "24h": "last 24 hours",
    "7d": "last 7 days",
    "30d": "last 30 days",
    "all": "any time",
}
# The charts: (bucket width, buckets) of the last hour and of the last day.
HOUR_BUCKETS = (timedelta(minutes=5), 12)
DAY_BUCKETS = (timedelta(hours=1), 24)
# Statistics read at once for the charts (each opens a session of the API's pool).
CHART_CONCURRENCY = 4


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    task: str
    next_run: datetime


@dataclass(frozen=True, slots=True)
class Overview:
    gauges: QueueGauges
    info: QueueInfo
    workers: list[LiveWorker]
    dead_letters: int
    hour: list[Bucket]
    day: list[Bucket]
    schedules: list[Schedule]
    owner: str | None  # an admin's owner filter of the statistics and dead letters


@dataclass(frozen=True, slots=True)
class JobView:
    status: JobStatusResponse
    args: dict[str, Any]
    may_abort: bool
    may_retry: bool
    wait_seconds: float | None = None
    run_seconds: float | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)


def waiting_by_priority(gauges: QueueGauges) -> list[tuple[str, int, int, int]]:
    """(priority, ready, deferred, blocked by dependencies) for each priority, highest first."""

    def count(state: str, priority: Priority) -> int:
        return gauges.waiting.get((state, priority.value), 0)

    return [
        (p.value, count("ready", p), count("deferred", p), count("blocked", p))
        for p in reversed(Priority)
    ]


async def overview(
    service: ArqService, principal: Principal, *, owner: str | None = None
) -> Overview:
    """The overview: queue, workers, charts of the last hour and day, dead letters, schedules."""
    now = datetime.now(UTC)
    gauges = await service.queue_gauges()
    info = await service.queue_info()
    workers = await service.live_workers()
    dead = await service.list_jobs(
        principal=principal, status=JobStatus.FAILED, owner=owner, limit=1
    )
    limit = asyncio.Semaphore(CHART_CONCURRENCY)

    async def stats(since: datetime, until: datetime) -> QueueStats:
        async with limit:
            return await service.queue_stats(
                principal=principal, since=since, until=until, owner=owner
            )

    async def chart(width: timedelta, count: int, label: str) -> list[Bucket]:
        epoch = datetime(2000, 1, 1, tzinfo=UTC)
        end = epoch + ((now - epoch) // width + 1) * width  # the current bucket's end
        edges = [end - width * (count - i) for i in range(count + 1)]
        found = await asyncio.gather(*(stats(a, b) for a, b in itertools.pairwise(edges)))
        return [
            Bucket(
                label=start.strftime(label),
                complete=result.total.statuses.complete,
                failed=result.total.statuses.failed,
                aborted=result.total.statuses.aborted,
            )
            for start, result in zip(edges, found, strict=False)
        ]

    hour = await chart(*HOUR_BUCKETS, "%H:%M")
    day = await chart(*DAY_BUCKETS, "%H:00")
    return Overview(
        gauges=gauges,
        info=info,
        workers=workers,
        dead_letters=dead.total,
        hour=hour,
        day=day,
        schedules=schedules(service, principal, workers),
        owner=principal.owner_filter(owner),
    )


def schedules(
    service: ArqService, principal: Principal, workers: list[LiveWorker]
) -> list[Schedule]:
    """The next run of each schedule the live workers run (the earliest any of them has), of
    the tasks the caller may run."""
    earliest: dict[str, datetime] = {}
    for worker in workers:
        for name, at in worker.schedules.items():
            if name not in earliest or at < earliest[name]:
                earliest[name] = at
    found = []
    for name, at in earliest.items():
        task = name.removeprefix("cron:")
        try:
            role = service.registry.get(task).role
        except UnknownTask:
            role = Role.ADMIN  # a task this API does not know: admins only
        if principal.is_admin or role is Role.USER:
            found.append(Schedule(name=name, task=task, next_run=at))
    return sorted(found, key=lambda schedule: (schedule.next_run, schedule.name))


async def jobs(
    service: ArqService,
    principal: Principal,
    *,
    status: JobStatus | None,
    function: str | None,
    owner: str | None,
    period: str,
    page: int,
    page_size: int,
) -> JobPage:
    """One page of the caller's jobs (an admin's: everyone's, or `owner`'s)."""
    back = PERIODS.get(period)
    return await service.list_jobs(
        principal=principal,
        status=status,
        function=function,
        owner=owner,
        limit=page_size,
        offset=(page - 1) * page_size,
        since=datetime.now(UTC) - back if back is not None else None,
    )


async def job(service: ArqService, principal: Principal, job_id: str) -> JobView:
    """A job as its page shows it; `JobNotFound` if it is not the caller's to see."""
    status = await service.get_job_status(job_id, principal=principal)
    args = await service.get_job_args(status.job_id, principal=principal)
    try:
        role = service.registry.get(status.function).role
    except UnknownTask:
        role = Role.ADMIN
    wait = run = None
    if status.started_at is not None:
        ready = max(status.enqueued_at, status.scheduled_for)
        wait = max(0.0, (status.started_at - ready).total_seconds())
        if status.finished_at is not None:
            run = max(0.0, (status.finished_at - status.started_at).total_seconds())
    return JobView(
        status=status,
        args=args,
        may_abort=not status.status.finished,
        may_retry=status.status in (JobStatus.FAILED, JobStatus.ABORTED)
        and (principal.is_admin or role is Role.USER),
        wait_seconds=wait,
        run_seconds=run,
        attempts=[attempt for attempt in status.attempts if isinstance(attempt, dict)],
    )


def task_names(service: ArqService, principal: Principal) -> list[str]:
    """The tasks a filter offers: those the caller may run (an admin: all)."""
    return sorted(task.name for task in service.tasks(principal=principal))
