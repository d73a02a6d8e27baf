"""Task dependencies: a job that waits (`waiting`) until the jobs it depends on have completed.

The waiting set lives in the history (`arq_job_dependencies`), never in Redis: a waiting job is
pushed to Redis only when it is released, so killed workers, a flushed Redis and API restarts
lose nothing. A job is settled (released, failed, or left waiting) by

- the process that records a dependency's ending, right after its commit (a subscriber of the
  lifecycle events: endings recorded by workers, status reads, aborts, the reconciliation);
- the enqueue itself, right after its commit (its dependencies may have ended already);
- every reconciliation pass (a sweep), for an ending whose process died before settling.

Between the first two nothing slips: an ending committed before the dependent's insert is seen
by the enqueue's settling, one committed after it sees the dependent's rows. Settling locks the
waiting rows, so two processes settling one job take turns and the second finds it settled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from redis.exceptions import RedisError

from src.arq import history, history_dependencies
from src.arq.events import EventKind, JobEvent
from src.arq.exceptions import InvalidJobArguments
from src.arq.models import JobRecord
from src.arq.outcome import Outcome, datetime_to_ms, ms_to_datetime, now_ms, now_utc
from src.arq.queue import QueuedJob
from src.arq.schemas import (
    LATER_DEPENDENCY_RULE,
    UNKNOWN_DEPENDENCY_RULE,
    EnqueueRequest,
    JobStatus,
    Priority,
)
from src.arq.service.core import Prepared, ServiceBase, ending_event, logger, owner_job_id
from src.auth.schemas import Principal

# Waiting jobs settled per transaction.
SETTLE_CHUNK = 500
_ENDED_BADLY = {
    JobStatus.FAILED: "failed",
    JobStatus.ABORTED: "was aborted",
    None: "is no longer in the history",
}


def verdict(policy: str | None, dependencies: Sequence[history_dependencies.Dependency]) -> str:
    """What a waiting job does now: "run", "wait", or the reason it fails (a dependency that
    ended badly, under the policy "fail")."""
    for dependency in dependencies:
        if policy != "run" and (
            dependency.status is None or dependency.status in (JobStatus.FAILED, JobStatus.ABORTED)
        ):
            return f"dependency {dependency.job_id} {_ENDED_BADLY[dependency.status]}"
    if any(d.status is not None and not d.status.finished for d in dependencies):
        return "wait"
    return "run"


def blocked_by(dependencies: Sequence[history_dependencies.Dependency]) -> list[str]:
    return [d.job_id for d in dependencies if d.status is not JobStatus.COMPLETE]


class DependencyMixin(ServiceBase):
    """Resolve `depends_on` at enqueue; release or fail waiting jobs as their dependencies end."""

    async def _resolve_dependencies(
        self,
        requests: Sequence[EnqueueRequest],
        prepared: list[Prepared],
        *,
        principal: Principal,
        locs: Sequence[tuple[Any, ...]],
    ) -> list[Prepared]:
        """`prepared` with each job's `depends_on` resolved to stored ids: `$N` (an earlier job
        of this batch), the id of an earlier job of this batch, or a job the caller may see
        (by its stored id, or the id the caller chose). 422 naming the field otherwise."""
        if not any(request.depends_on for request in requests):
            return prepared
        wanted: set[str] = set()
        for request in requests:
            for ref in request.depends_on or ():
                if not ref.startswith("$"):
                    wanted.update((ref, owner_job_id(principal.owner, ref)))
        async with self.sessionmaker() as session:
            owners = await history.existing_ids(session, wanted)
        resolved: list[Prepared] = []
        in_batch: dict[str, str] = {}  # the ids earlier jobs of the batch were given -> stored
        for index, (request, item) in enumerate(zip(requests, prepared, strict=True)):
            ids: list[str] = []
            for position, ref in enumerate(request.depends_on or ()):
                loc = [*locs[index], "depends_on", position]
                ids.append(
                    self._dependency_id(ref, index, prepared, in_batch, owners, principal, loc)
                )
            if ids:
                item = dataclasses.replace(
                    item,
                    depends_on=tuple(dict.fromkeys(ids)),
                    on_dependency_failure=request.on_dependency_failure,
                    status=JobStatus.WAITING,
                )
            resolved.append(item)
            if request.job_id is not None:
                in_batch[request.job_id] = item.job_id
            in_batch[item.job_id] = item.job_id
        return resolved

    @staticmethod
    def _dependency_id(
        ref: str,
        index: int,
        prepared: list[Prepared],
        in_batch: dict[str, str],
        owners: dict[str, str],
        principal: Principal,
        loc: list[Any],
    ) -> str:
        if ref.startswith("$"):
            position = int(ref[1:])
            if position >= index:
                raise _unknown_dependency(ref, loc, LATER_DEPENDENCY_RULE)
            return prepared[position].job_id
        if ref in in_batch:
            return in_batch[ref]
        if ref in owners and principal.may_see(owners[ref]):
            return ref
        own = owner_job_id(principal.owner, ref)
        if own in owners:
            return own
        # A job of another owner is answered as one that does not exist.
        raise _unknown_dependency(ref, loc, UNKNOWN_DEPENDENCY_RULE)

    async def settle_waiting(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        """Release the waiting jobs of `job_ids` whose dependencies have completed, fail those a
        failed dependency ends, leave the others waiting; their statuses now."""
        settled: dict[str, JobStatus] = {}
        ids = sorted(set(job_ids))
        for start in range(0, len(ids), SETTLE_CHUNK):
            settled.update(await self._settle_chunk(ids[start : start + SETTLE_CHUNK]))
        return settled

    async def _settle_chunk(self, job_ids: list[str]) -> dict[str, JobStatus]:
        now = now_ms()
        released: list[JobRecord] = []
        failed: list[tuple[JobRecord, Outcome]] = []
        statuses: dict[str, JobStatus] = {}
        async with self.sessionmaker.begin() as session:
            records = await history_dependencies.lock_waiting(session, job_ids)
            dependencies = await history_dependencies.dependencies_of(
                session, [r.job_id for r in records]
            )
            for record in records:
                decision = verdict(record.on_dependency_failure, dependencies[record.job_id])
                if decision == "wait":
                    statuses[record.job_id] = JobStatus.WAITING
                elif decision == "run":
                    # Due when released (or at its own deferral, if that is later).
                    run_at = max(now, datetime_to_ms(record.scheduled_for))
                    status = JobStatus.DEFERRED if run_at > now else JobStatus.QUEUED
                    record.status = status.value
                    record.scheduled_for = ms_to_datetime(run_at)
                    released.append(record)
                    statuses[record.job_id] = status
                else:
                    outcome = Outcome(
                        status=JobStatus.FAILED,
                        result=None,
                        error={"type": "DependencyFailed", "message": decision},
                        tries=None,
                        started_at=None,
                        finished_at=now_utc(),
                    )
                    record.status = JobStatus.FAILED.value
                    record.finished_at = outcome.finished_at
                    record.error = outcome.error
                    record.message = None
                    failed.append((record, outcome))
                    statuses[record.job_id] = JobStatus.FAILED
        if released:
            jobs = [_queued(record) for record in released]
            try:
                await self.queue.push(jobs, now_ms=now, wake=self.settings.wake_on_enqueue)
            except (RedisError, OSError):
                # Queued on record: the reconciliation pushes them once Redis answers.
                logger.warning("Redis is unreachable: %d released job(s) wait", len(jobs))
        await self.events.publish(
            [
                *(
                    JobEvent(
                        EventKind.ENQUEUED,
                        record.job_id,
                        record.function,
                        record.owner,
                        statuses[record.job_id],
                    )
                    for record in released
                ),
                # Their own dependents are settled in turn (this service subscribes to endings).
                *(ending_event(record, outcome) for record, outcome in failed),
            ]
        )
        return statuses

    async def _settle_dependents(self, events: Sequence[JobEvent]) -> None:
        """Subscriber of endings: settle the waiting jobs that depend on the jobs that ended."""
        ended = [event.job_id for event in events if event.ends]
        if not ended:
            return
        async with self.sessionmaker() as session:
            # One read, on every batch of endings: no transaction around it (BEGIN and ROLLBACK
            # would be round trips of their own).
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            waiting = await history_dependencies.waiting_dependents(session, ended)
        if waiting:
            await self.settle_waiting(waiting)

    async def settle_all_waiting(self) -> None:
        """Sweep: settle every waiting job (an ending whose process died before settling its
        dependents leaves them waiting until this pass)."""
        after = ""
        while True:
            async with self.sessionmaker() as session:
                page = await history_dependencies.waiting_page(
                    session, after=after, limit=SETTLE_CHUNK
                )
            if not page:
                return
            await self.settle_waiting(page)
            after = page[-1]

    async def _dependency_view(self, job_id: str) -> list[history_dependencies.Dependency]:
        async with self.sessionmaker() as session:
            return (await history_dependencies.dependencies_of(session, [job_id]))[job_id]


def _queued(record: JobRecord) -> QueuedJob:
    return QueuedJob(
        job_id=record.job_id,
        function=record.function,
        kwargs=record.args,
        priority=Priority(record.priority),
        run_at_ms=datetime_to_ms(record.scheduled_for),
        enqueued_ms=datetime_to_ms(record.enqueued_at),
        owner=record.owner,
        request_id=record.request_id,
    )


def _unknown_dependency(ref: str, loc: list[Any], why: str) -> InvalidJobArguments:
    return InvalidJobArguments(
        f"depends_on: {ref!r}: {why}",
        [{"loc": loc, "msg": why, "type": "unknown_dependency", "input": ref}],
    )
