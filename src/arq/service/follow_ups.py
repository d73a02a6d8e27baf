"""What follows a job's ending, and the sweeps that catch up on it after a crash.

The endings that owe a completion webhook (`owed_webhooks`), the system jobs queued after them
(`enqueue_follow_ups`) and the sweeps packages add to the workers' reconciliation passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from src.arq import history
from src.arq.events import EventKind, JobEvent
from src.arq.exceptions import InvalidJobArguments, UnknownTask
from src.arq.outcome import now_ms
from src.arq.schemas import JobStatus, Priority
from src.arq.service.core import Prepared, ServiceBase, Sweep, logger


@dataclass(frozen=True, slots=True)
class JobEnding:
    """A finished job that asked for a completion webhook (`notify_url`) not queued yet."""

    job_id: str
    function: str
    owner: str
    priority: Priority
    status: JobStatus
    tries: int
    finished_at: datetime | None
    result: Any
    error: dict[str, Any] | None
    notify_url: str
    notify_secret: str | None


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A system job that follows a job's ending (its completion webhook): queued under
    `job_id` (derived from the ending, so two callers never queue one twice) for `owner`."""

    after: str
    function: str
    job_id: str
    kwargs: dict[str, Any]
    owner: str
    priority: Priority


class FollowUpMixin(ServiceBase):
    """Follow-ups of endings (completion webhooks) and sweeps."""

    async def owed_webhooks(
        self, job_ids: Sequence[str] | None = None, *, limit: int = 500
    ) -> list[JobEnding]:
        """Finished jobs (of `job_ids`, or any) that asked for a completion webhook not queued
        yet, oldest ending first."""
        async with self.sessionmaker() as session:
            records = await history.pending_notifications(session, job_ids=job_ids, limit=limit)
        return [
            JobEnding(
                job_id=record.job_id,
                function=record.function,
                owner=record.owner,
                priority=Priority(record.priority),
                status=JobStatus(record.status),
                tries=record.tries,
                finished_at=record.finished_at,
                result=record.result,
                error=record.error,
                notify_url=record.notify_url or "",
                notify_secret=record.notify_secret,
            )
            for record in records
        ]

    async def enqueue_follow_ups(self, follow_ups: Sequence[FollowUp]) -> list[str]:
        """Queue each follow-up under its own id and record it on the job it follows, in one
        transaction (a follow-up queued before is not queued again); the ids queued now. One
        whose arguments are invalid is logged and recorded as "invalid", never retried."""
        now = now_ms()
        chosen: dict[str, str] = {}
        items: list[Prepared] = []
        for follow_up in follow_ups:
            try:
                spec = self.registry.get(follow_up.function)
                kwargs = spec.validate_args([], follow_up.kwargs)
            except (InvalidJobArguments, UnknownTask) as exc:
                # Checked at enqueue, so only a row written by other means gets here; mark it
                # so that no sweep reads it again and again.
                logger.warning(
                    "job %s: follow-up %s not queued: %s", follow_up.after, follow_up.function, exc
                )
                chosen[follow_up.after] = "invalid"
                continue
            chosen[follow_up.after] = follow_up.job_id
            items.append(
                Prepared(
                    spec=spec,
                    job_id=follow_up.job_id,
                    kwargs=kwargs,
                    priority=follow_up.priority,
                    run_at_ms=now,
                    status=JobStatus.QUEUED,
                    owner=follow_up.owner,
                )
            )
        rows = [self._history_row(item, now_ms=now) for item in items]
        async with self.sessionmaker.begin() as session:
            inserted = await history.insert_new(session, rows) if rows else set()
            await history.set_notification_jobs(session, chosen)
        queued = [item for item in items if item.job_id in inserted]
        if queued:
            try:
                await self._push(queued, now_ms=now)
            except (RedisError, OSError):
                # On record all the same: the reconciliation queues them once Redis answers.
                logger.warning("Redis is unreachable: %d follow-up job(s) wait", len(queued))
        await self.events.publish(
            [
                JobEvent(EventKind.ENQUEUED, item.job_id, item.spec.name, item.owner, item.status)
                for item in queued
            ]
        )
        return [item.job_id for item in queued]

    def add_sweep(self, sweep: Sweep) -> None:
        """Run `sweep` with each reconciliation pass of the workers (one worker at a time): where
        a package catches up on what a crash left undone."""
        self._sweeps.append(sweep)

    async def sweep(self) -> None:
        for sweep in self._sweeps:
            try:
                await sweep()
            except (SQLAlchemyError, RedisError, OSError):
                logger.warning("a sweep failed (%s); it runs again later", sweep, exc_info=True)
