"""Enqueueing: validate a job (task, role, priority, arguments, id, time) and queue it.

A job is written to the history first and pushed to Redis second, all of a batch or none; the
ids clients choose live in their owner's namespace (`owner_job_id`); schedules queue their runs
under ids of their own (`enqueue_scheduled`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from src import logs
from src.arq import history, history_dependencies
from src.arq.events import EventKind, JobEvent
from src.arq.exceptions import InvalidJobArguments, JobConflict, TaskForbidden
from src.arq.outcome import datetime_to_ms, now_ms
from src.arq.queue import PRIORITY_LEVEL
from src.arq.schemas import (
    DependencyFailurePolicy,
    EnqueueRequest,
    EnqueueResponse,
    JobStatus,
    Priority,
)
from src.arq.service.core import SYSTEM, Prepared, logger, owner_job_id
from src.arq.service.dependencies import DependencyMixin
from src.auth.schemas import Principal, Role


class EnqueueMixin(DependencyMixin):
    """Queue jobs: one, a batch (all or none), a schedule's run."""

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
        _depends_on: Sequence[str] | None = None,
        _on_dependency_failure: DependencyFailurePolicy = "fail",
        **kwargs: Any,
    ) -> EnqueueResponse:
        """Python API: `await arq_service.enqueue_job("ping", message="hi")`, validated as REST
        (`_notify_url`/`_notify_secret`: a completion webhook; `_depends_on`: job ids that must
        complete first)."""
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
            depends_on=list(_depends_on) if _depends_on is not None else None,
            on_dependency_failure=_on_dependency_failure,
        )
        return await self.enqueue(request, principal=_principal)

    async def enqueue(self, request: EnqueueRequest, *, principal: Principal) -> EnqueueResponse:
        """Validate and queue one job."""
        now_ms = int(time.time() * 1000)
        prepared = [self._prepare(request, principal=principal, now_ms=now_ms)]
        prepared = await self._resolve_dependencies(
            [request], prepared, principal=principal, locs=[("body",)]
        )
        return (await self._enqueue_prepared(prepared, principal=principal, now_ms=now_ms))[0]

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
        prepared = await self._resolve_dependencies(
            requests,
            prepared,
            principal=principal,
            locs=[("body", index) for index in range(len(requests))],
        )
        return await self._enqueue_prepared(prepared, principal=principal, now_ms=now_ms)

    def _prepare(
        self,
        request: EnqueueRequest,
        *,
        principal: Principal,
        now_ms: int,
        loc: tuple[Any, ...] = ("body",),
    ) -> Prepared:
        spec = self.registry.get(request.function_name, loc=".".join(map(str, loc)))
        if spec.role is Role.ADMIN and not principal.is_admin:
            raise TaskForbidden(f"task {spec.name!r} needs the admin role")
        self._check_priority(request.priority, principal)
        kwargs = spec.validate_args(
            request.args, request.kwargs, loc_prefix=loc, max_bytes=self.settings.max_args_bytes
        )
        if request.notify_url is not None and not self.events.delivers_completion_hooks:
            raise InvalidJobArguments(
                "notify_url: this service sends no completion webhooks",
                [
                    {
                        "loc": [*loc, "notify_url"],
                        "msg": "this service sends no completion webhooks",
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
        return Prepared(
            spec=spec,
            job_id=self._job_id(request.job_id, principal, loc=loc),
            kwargs=kwargs,
            priority=request.priority,
            run_at_ms=score,
            status=JobStatus.DEFERRED if score > now_ms else JobStatus.QUEUED,
            owner=principal.owner,
            notify_url=request.notify_url,
            notify_secret=request.notify_secret,
            # The request's own id (or, for a job queued by a job, that job's request's).
            request_id=logs.request_id(),
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
        if requested.lower().startswith(self.reserved_prefixes):
            raise InvalidJobArguments(
                f"job_id: {requested!r} starts with a prefix reserved for the system's jobs",
                [
                    {
                        "loc": [*loc, "job_id"],
                        "msg": "must not start with "
                        + ", ".join(repr(p) for p in self.reserved_prefixes),
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
            item = Prepared(
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
        self, items: list[Prepared], *, principal: Principal, now_ms: int, charge: bool = True
    ) -> list[EnqueueResponse]:
        ids = [item.job_id for item in items]
        # The limit is each client's: the application's own code (the Python API's system
        # principal, schedules, follow-ups) is not counted, as ARQ's enqueue_job is not.
        charge = charge and principal.owner != SYSTEM.owner
        if charge:
            await self._rate_limit.charge(principal.owner, len(items))
        rows = [self._history_row(item, now_ms=now_ms) for item in items]
        dependencies = {item.job_id: item.depends_on for item in items if item.depends_on}
        if dependencies:
            inserted = await self._insert_with_dependencies(rows, dependencies)
        else:
            # Committed (in a round shared with concurrent enqueues) before anything is answered.
            inserted = await self._group_commit.insert(rows)
        if len(inserted) < len(rows):  # nothing of this request was kept
            if charge:
                await self._rate_limit.refund(principal.owner, len(items))
            taken = next(job_id for job_id in ids if job_id not in inserted)
            async with self.sessionmaker() as session:
                raise await self._conflict(session, taken, principal)
        try:
            # Waiting jobs stay out of Redis until their dependencies release them.
            await self._push([item for item in items if not item.depends_on], now_ms=now_ms)
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
        # Nobody can watch a job before its id is returned: this process' subscribers only.
        await self.events.publish(
            (
                JobEvent(EventKind.ENQUEUED, item.job_id, item.spec.name, item.owner, item.status)
                for item in items
            ),
            remote=False,
        )
        # Dependencies that ended before these rows were committed release (or fail) them now.
        settled = await self.settle_waiting(dependencies) if dependencies else {}
        return [
            EnqueueResponse(
                job_id=item.job_id,
                function=item.spec.name,
                status=settled.get(item.job_id, item.status),
                status_url=f"{self.api_prefix}/status/{item.job_id}",
                result_url=f"{self.api_prefix}/result/{item.job_id}",
            )
            for item in items
        ]

    async def _insert_with_dependencies(
        self, rows: list[dict[str, Any]], dependencies: dict[str, tuple[str, ...]]
    ) -> set[str]:
        """Insert the jobs and their dependencies in one transaction: all of them, or (an id
        is taken) none; the ids inserted."""
        try:
            async with self.sessionmaker.begin() as session:
                inserted = await history.insert_new(session, rows)
                if len(inserted) < len(rows):
                    raise _IdTaken(inserted)  # rolls the others back
                await history_dependencies.add_dependencies(session, dependencies)
        except _IdTaken as taken:
            return taken.inserted
        return inserted

    async def _conflict(
        self, session: AsyncSession, job_id: str, principal: Principal
    ) -> JobConflict:
        owner = (await history.existing_ids(session, [job_id])).get(job_id)
        if principal.may_see(owner):
            return JobConflict(
                f"job_id {job_id!r} is already in use",
                status_url=f"{self.api_prefix}/status/{job_id}",
                job_id=job_id,
            )
        # Only the system's own ids are outside the caller's namespace: say nothing about it.
        return JobConflict(f"job_id {job_id!r} is already in use", job_id=job_id)


class _IdTaken(Exception):
    def __init__(self, inserted: set[str]) -> None:
        self.inserted = inserted
