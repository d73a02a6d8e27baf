"""The Redis side of the job module: ARQ's sorted set plus priorities, claims, leases and wake-ups.

ARQ runs the job with the lowest score that is not in the future. A ready job's score is the time
it became ready minus an offset for its priority (`level * aging`), so a `critical` job sorts
before every `normal` one that has waited less than `aging`; a job that waits longer than that
overtakes newer jobs one level up (aging, so `low` jobs are delayed, never starved).

A deferred job waits at its run time (the score ARQ needs to hold it back); when that time comes
a worker "promotes" it to its priority's place. Until then it runs as a `low` job would, so a
late promotion never loses a job.

The scripts are in `src.arq.scripts`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import SerializationError
from redis.asyncio.client import Pipeline

from src.arq import keys
from src.arq.config import ArqSettings
from src.arq.schemas import Priority
from src.arq.scripts import (
    ABORT_MAX_AGE_MS,
    ABORT_SCRIPT,
    BACK_IN_LINE_SCRIPT,
    CLAIM_FIELDS,
    CLAIM_SCRIPT,
    DROP_CLAIM_SCRIPT,
    FINISH_SCRIPT,
    PROMOTE_SCRIPT,
    PUSH_CHUNK,
    PUSH_SCRIPT,
    RETRY_KEY_SECONDS,
    ScriptCall,
    run_scripts,
)
from src.arq.serialization import serialize

# Published on a job's event channel when it ended (not a `JobEvent`: listeners that read events
# skip it, those that only wake up, as status streams and `wait_for_result` do, look again).
WAKE = b"wake"

PRIORITY_LEVEL = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2, Priority.CRITICAL: 3}
# A job key lives this long past the job's run time (ARQ's default is one day).
JOB_KEY_TTL_MS = 7 * 86_400_000


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """What `push` needs to queue one job."""

    job_id: str
    function: str
    kwargs: dict[str, Any]
    priority: Priority
    run_at_ms: int
    enqueued_ms: int
    job_try: int | None = None
    owner: str = ""  # for fair share between owners; "" = not counted
    request_id: str | None = None  # of the request that queued it: its worker's lines carry it


@dataclass(frozen=True, slots=True)
class Claim:
    """A job a worker claimed, with what its run needs (read by the claim, as ARQ's run reads
    it): its stored data (None: gone), its try (counted) and whether it was aborted before its
    start."""

    job_id: str
    score: int
    data: bytes | None
    job_try: int
    aborted: bool


@dataclass(frozen=True, slots=True)
class JobState:
    """What Redis holds for one job."""

    raw_result: bytes | None
    running: bool
    score: float | None
    job_exists: bool
    tries: int


def job_payload(job: QueuedJob) -> bytes:
    """What ARQ stores for a job (the keys of `arq.jobs.serialize_job`), plus its owner,
    request id, ready time and priority for the log lines of its run (`src.arq.job_logs`,
    `src.arq.log_masking`); ARQ reads only its own."""
    data: dict[str, Any] = {
        "t": job.job_try,
        "f": job.function,
        "a": [],
        "k": job.kwargs,
        "et": job.enqueued_ms,
        # Its scores are shifted by its priority: the worker's "delayed=" is measured from these.
        "ready_ms": job.run_at_ms,
        "priority": job.priority.value,
    }
    if job.owner:
        data["owner"] = job.owner
    if job.request_id:
        data["request_id"] = job.request_id
    try:
        return serialize(data)
    except Exception as exc:
        raise SerializationError(f"unable to serialize job {job.function!r}") from exc


@dataclass(frozen=True, slots=True)
class Poll:
    """What one look at the queue found (`JobQueue.poll`)."""

    next_due: int | None  # when the next deferred job falls due, if any
    claims: list[Claim]
    abort_ids: list[str]  # the abort marks, as ARQ's worker reads them on each poll


def _publish(channel: str, message: bytes, pipe: Pipeline) -> None:
    pipe.publish(channel, message)


def _claims(raw: list[Any]) -> list[Claim]:
    return [
        Claim(
            job_id=raw[i].decode(),
            score=int(float(raw[i + 1])),
            data=raw[i + 2],
            job_try=int(raw[i + 3]),
            aborted=bool(raw[i + 4]),
        )
        for i in range(0, len(raw), CLAIM_FIELDS)
    ]


class JobQueue:
    """Queue operations on one ARQ queue."""

    def __init__(
        self,
        redis: ArqRedis,
        *,
        queue_name: str,
        aging_seconds: float,
        fairness_step: float = 0.0,
        fairness_cap: float = 0.0,
    ) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self.aging_ms = int(aging_seconds * 1000)
        self.fair_step_ms = int(fairness_step * 1000)
        # Also how much earlier than its ready time every ready job sorts, so that one pushed
        # back by its owner's backlog (at most this much) is still due at once.
        self.fair_cap_ms = int(fairness_cap * 1000) if self.fair_step_ms else 0
        self.wake_channel = keys.wake_channel(queue_name)
        self._push = redis.register_script(PUSH_SCRIPT)
        self._push_keys = [
            queue_name,
            keys.abort_jobs_ss,
            keys.deferred_set(queue_name),
            keys.priority_offsets(queue_name),
            keys.fair_clocks(queue_name),
        ]
        self._claim = redis.register_script(CLAIM_SCRIPT)
        self._promote = redis.register_script(PROMOTE_SCRIPT)
        self._abort = redis.register_script(ABORT_SCRIPT)
        self._back_in_line = redis.register_script(BACK_IN_LINE_SCRIPT)
        self._drop_claim = redis.register_script(DROP_CLAIM_SCRIPT)
        self._finish = redis.register_script(FINISH_SCRIPT)

    @classmethod
    def for_settings(cls, redis: ArqRedis, settings: ArqSettings) -> JobQueue:
        """The queue as `settings` describe it (name, aging, fair share)."""
        return cls(
            redis,
            queue_name=settings.queue_name,
            aging_seconds=settings.priority_aging,
            fairness_step=settings.fairness_step,
            fairness_cap=settings.fairness_cap_seconds,
        )

    def offset(self, priority: Priority) -> int:
        """How much earlier than its ready time a job of this priority sorts."""
        return PRIORITY_LEVEL[priority] * self.aging_ms + self.fair_cap_ms

    def score(self, priority: Priority, run_at_ms: int, now_ms: int) -> int:
        """Where a job sorts: deferred jobs wait at their time, ready ones at their priority."""
        if run_at_ms > now_ms:
            return run_at_ms
        return run_at_ms - self.offset(priority)

    async def push(
        self, jobs: Sequence[QueuedJob], *, now_ms: int, wake: bool = True
    ) -> list[bool]:
        """Queue jobs in one round trip; False for an id Redis still holds."""
        calls: list[ScriptCall] = []
        for first in range(0, len(jobs), PUSH_CHUNK):
            args: list[Any] = [
                keys.job_key_prefix,
                keys.result_key_prefix,
                keys.retry_key_prefix,
                now_ms,
                self.fair_step_ms,
                self.fair_cap_ms,
            ]
            for index in range(first, min(first + PUSH_CHUNK, len(jobs))):
                job = jobs[index]
                # Equal scores sort by id; a fraction of a millisecond keeps a batch in order
                # (a double holds 12 bits below the millisecond at today's timestamps).
                score = self.score(job.priority, job.run_at_ms, now_ms) + index / 4096
                args += (
                    job.job_id,
                    job_payload(job),
                    max(job.run_at_ms - now_ms, 0) + JOB_KEY_TTL_MS,
                    score,
                    self.offset(job.priority),
                    int(job.run_at_ms > now_ms),
                    f"{job.owner}|{job.priority.value}" if job.owner else "",
                )
            calls.append((self._push, self._push_keys, args))
        wake_up = functools.partial(_publish, self.wake_channel, b"1") if wake else None
        replies = await run_scripts(self.redis, calls, then=wake_up)
        return [bool(ok) for reply in replies[: len(calls)] for ok in reply]

    async def defer_priority(self, job_id: str, *, run_at_ms: float, priority: Priority) -> None:
        """Give a job that ARQ re-queued for later (a retry) its priority back when it is due."""
        offset = self.offset(priority)
        if offset == 0:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.deferred_set(self.queue_name), {job_id: run_at_ms})
            pipe.hset(keys.priority_offsets(self.queue_name), job_id, str(offset))
            await pipe.execute()

    async def poll(
        self,
        limit: int,
        *,
        lease_ms: int,
        now_ms: int,
        max_scan: int = 10_000,
        check_abort: bool = True,
    ) -> Poll:
        """A worker's look at the queue in one round trip: due deferred jobs promoted to their
        priority's place (PROMOTE_SCRIPT), up to `limit` ready jobs claimed, highest priority
        first, each with its data, try and abort mark (CLAIM_SCRIPT; none when `limit` is 0;
        `check_abort` off leaves the marks) and, with `check_abort`, the abort marks as ARQ's
        worker reads them (the abort set, then ARQ's clean-up of marks scored in the future)."""

        def aborts(pipe: Pipeline) -> None:
            if check_abort:
                pipe.zrange(keys.abort_jobs_ss, 0, -1)
                pipe.zremrangebyscore(keys.abort_jobs_ss, now_ms + ABORT_MAX_AGE_MS, "+inf")

        calls = [self._promote_call(now_ms)]
        if limit > 0:
            calls.append(self._claim_call(limit, lease_ms, now_ms, max_scan, check_abort))
        replies = await run_scripts(self.redis, calls, then=aborts)
        nxt = replies[0]
        return Poll(
            next_due=int(float(nxt)) if nxt else None,
            claims=_claims(replies[1]) if limit > 0 else [],
            abort_ids=[raw.decode() for raw in replies[len(calls)]] if check_abort else [],
        )

    def _claim_call(
        self, limit: int, lease_ms: int, now_ms: int, max_scan: int, check_abort: bool
    ) -> ScriptCall:
        return (
            self._claim,
            [self.queue_name, keys.abort_jobs_ss],
            [
                now_ms,
                limit,
                lease_ms,
                keys.in_progress_key_prefix,
                max_scan,
                keys.job_key_prefix,
                keys.retry_key_prefix,
                RETRY_KEY_SECONDS,
                int(check_abort),
            ],
        )

    def _promote_call(self, now_ms: int) -> ScriptCall:
        return (
            self._promote,
            [
                keys.deferred_set(self.queue_name),
                self.queue_name,
                keys.priority_offsets(self.queue_name),
            ],
            [now_ms],
        )

    async def back_in_line(self, job_id: str, *, incr_score: int | None) -> None:
        """ARQ's "run it again" for a job its worker gives back (a retry, a cancellation), but
        only while the job is still stored: after an empty Redis restart ARQ's ZINCRBY would
        queue a bare id near score 0 that then fails as "job expired"; the reconciliation
        queues such a job again instead."""
        await self._back_in_line(
            keys=[
                keys.in_progress_key_prefix + job_id,
                self.queue_name,
                keys.job_key_prefix + job_id,
            ],
            args=[incr_score or 0, job_id],
        )

    async def finish(self, job_id: str, result_data: bytes | None) -> None:
        """Store an ended job's ending and let go of it (see FINISH_SCRIPT)."""
        await self.finish_many([(job_id, result_data)])

    async def finish_many(self, endings: Sequence[tuple[str, bytes | None]]) -> list[None]:
        """`finish` several jobs in one round trip."""
        await run_scripts(
            self.redis,
            [
                (
                    self._finish,
                    [
                        keys.result_key_prefix + job_id,
                        keys.in_progress_key_prefix + job_id,
                        keys.retry_key_prefix + job_id,
                        keys.job_key_prefix + job_id,
                        keys.abort_jobs_ss,
                        self.queue_name,
                        keys.job_events(job_id),
                    ],
                    [result_data or b"", job_id, WAKE],
                )
                for job_id, result_data in endings
            ],
        )
        return [None] * len(endings)

    async def drop_claim(self, job_id: str) -> None:
        """Let go of a claimed job whose data Redis lost (the reconciliation queues it again)."""
        await self._drop_claim(
            keys=[
                keys.in_progress_key_prefix + job_id,
                self.queue_name,
                keys.job_key_prefix + job_id,
                keys.retry_key_prefix + job_id,
            ],
            args=[job_id],
        )

    async def abort(self, job_id: str, *, now_ms: int) -> int:
        """1: removed before it ran; 0: running, marked for cancellation; -1: not in Redis."""
        outcome: int = await self._abort(
            keys=[
                keys.in_progress_key_prefix + job_id,
                self.queue_name,
                keys.job_key_prefix + job_id,
                keys.retry_key_prefix + job_id,
                keys.abort_jobs_ss,
                keys.deferred_set(self.queue_name),
                keys.priority_offsets(self.queue_name),
            ],
            args=[job_id, now_ms],
        )
        return outcome

    async def state(self, job_ids: Sequence[str]) -> list[JobState]:
        """What Redis holds for each job, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.get(keys.result_key_prefix + job_id)
                pipe.exists(keys.in_progress_key_prefix + job_id)
                pipe.zscore(self.queue_name, job_id)
                pipe.exists(keys.job_key_prefix + job_id)
                pipe.get(keys.retry_key_prefix + job_id)
            raw = await pipe.execute()
        return [
            JobState(
                raw_result=raw[i],
                running=bool(raw[i + 1]),
                score=raw[i + 2],
                job_exists=bool(raw[i + 3]),
                tries=int(raw[i + 4] or 0),
            )
            for i in range(0, len(raw), 5)
        ]

    async def expire_results(self, job_ids: Sequence[str], *, keep_ms: int) -> None:
        """Give recorded endings their time in Redis (workers keep them until recorded)."""
        if not job_ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.pexpire(keys.result_key_prefix + job_id, keep_ms)
            await pipe.execute()

    async def forget_result(self, job_id: str) -> None:
        """Drop ARQ's copy of a finished job's ending (so the id can be queued again)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.result_key_prefix + job_id, keys.retry_key_prefix + job_id)
            pipe.zrem(keys.abort_jobs_ss, job_id)
            await pipe.execute()
