"""The Redis side of the job module: ARQ's sorted set plus priorities, claims, leases and wake-ups.

ARQ runs the job with the lowest score that is not in the future. A ready job's score is the time
it became ready minus an offset for its priority (`level * aging`), so a `critical` job sorts
before every `normal` one that has waited less than `aging`; a job that waits longer than that
overtakes newer jobs one level up (aging, so `low` jobs are delayed, never starved).

A deferred job waits at its run time (the score ARQ needs to hold it back); when that time comes
a worker "promotes" it to its priority's place. Until then it runs as a `low` job would, so a
late promotion never loses a job.

All scripts touch only keys of one job and the module's sets; they assume one Redis (as ARQ does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import serialize_job

from src.arq import keys
from src.arq.config import ArqSettings
from src.arq.schemas import Priority
from src.arq.serialization import serialize

PRIORITY_LEVEL = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2, Priority.CRITICAL: 3}
# A job key lives this long past the job's run time (ARQ's default is one day).
JOB_KEY_TTL_MS = 7 * 86_400_000

# Queue one job unless its id is held (job or result). Clears what an earlier job under the same
# id may have left: a stale abort mark (arq #485) and the try counter. Fair share: the owner's
# virtual clock (KEYS[8], field ARGV[7]) says how far their backlog at this priority pushes the
# job back (never beyond ARGV[10] ms); a deferred job carries that into its promotion offset.
PUSH_SCRIPT = """
if redis.call('exists', KEYS[1], KEYS[2]) > 0 then return 0 end
local now, score, offset = tonumber(ARGV[8]), tonumber(ARGV[3]), tonumber(ARGV[5])
local step, cap = tonumber(ARGV[9]), tonumber(ARGV[10])
local penalty = 0
if step > 0 and ARGV[7] ~= '' then
  local clock = math.max(tonumber(redis.call('hget', KEYS[8], ARGV[7]) or '0'), now)
  if clock > now + cap then clock = now + cap end
  penalty = clock - now
  redis.call('hset', KEYS[8], ARGV[7], string.format('%.0f', clock + step))
  -- A clock behind now means nothing: the hash lives only while someone queues.
  redis.call('pexpire', KEYS[8], cap + step + 60000)
end
local deferred = tonumber(ARGV[6]) == 1
if not deferred then score = score + penalty end
redis.call('psetex', KEYS[1], ARGV[2], ARGV[1])
redis.call('zadd', KEYS[3], score, ARGV[4])
redis.call('zrem', KEYS[4], ARGV[4])
redis.call('del', KEYS[7])
if deferred and offset - penalty ~= 0 then
  redis.call('zadd', KEYS[5], score, ARGV[4])
  redis.call('hset', KEYS[6], ARGV[4], string.format('%.0f', offset - penalty))
end
return 1
"""

# Claim up to ARGV[2] ready jobs that no worker holds: set their in-progress lease, in score
# order, skipping held ones. Returns [id, score, id, score, ...].
CLAIM_SCRIPT = """
local now, limit, lease, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local batch, max_scan = 200, tonumber(ARGV[5])
local claimed, found, offset = {}, 0, 0
while found < limit and offset < max_scan do
  local ids = redis.call(
    'zrangebyscore', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', offset, batch)
  if #ids == 0 then break end
  for i = 1, #ids, 2 do
    local key = prefix .. ids[i]
    if redis.call('exists', key) == 0 then
      redis.call('psetex', key, lease, '1')
      claimed[#claimed + 1] = ids[i]
      claimed[#claimed + 1] = ids[i + 1]
      found = found + 1
      if found >= limit then break end
    end
  end
  offset = offset + batch
end
return claimed
"""

# Move deferred jobs whose time has come to their priority's place; return the next run time.
PROMOTE_SCRIPT = """
local due = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, 500)
for i = 1, #due, 2 do
  local id, run_at = due[i], tonumber(due[i + 1])
  local offset = tonumber(redis.call('hget', KEYS[3], id) or '0')
  local current = redis.call('zscore', KEYS[2], id)
  if current and tonumber(current) == run_at then
    redis.call('zadd', KEYS[2], 'XX', run_at - offset, id)
  end
  redis.call('zrem', KEYS[1], id)
  redis.call('hdel', KEYS[3], id)
end
local nxt = redis.call('zrange', KEYS[1], 0, 0, 'WITHSCORES')
if #nxt == 0 then return false end
return nxt[2]
"""

# Renew the leases of jobs a worker runs, re-creating any that Redis lost (an empty restart);
# never once the job has an ending, so a renewal racing the job's end leaves no lease behind.
RENEW_SCRIPT = """
local lease, result_prefix, lease_prefix = ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV do
  local id = ARGV[i]
  if redis.call('exists', result_prefix .. id) == 0 then
    redis.call('psetex', lease_prefix .. id, lease, '1')
  end
end
return 1
"""

# A job its worker gives back: drop its lease; move it by ARGV[1] ms if it is still stored, else
# take its bare id out of the queue.
BACK_IN_LINE_SCRIPT = """
redis.call('del', KEYS[1])
if redis.call('exists', KEYS[3]) == 0 then
  redis.call('zrem', KEYS[2], ARGV[2])
elseif tonumber(ARGV[1]) ~= 0 then
  redis.call('zincrby', KEYS[2], ARGV[1], ARGV[2])
end
return 1
"""

# Abort: 1 = a waiting job was taken out of the queue; 0 = it is running and is now marked for
# cancellation; -1 = it is neither queued nor running. Atomic, so a mark is only ever set while
# the job runs, and ARQ removes it when the job ends: no stale marks.
ABORT_SCRIPT = """
if redis.call('exists', KEYS[1]) == 1 then
  redis.call('zadd', KEYS[5], ARGV[2], ARGV[1])
  return 0
end
if redis.call('zrem', KEYS[2], ARGV[1]) == 0 then return -1 end
redis.call('del', KEYS[3], KEYS[4])
redis.call('zrem', KEYS[6], ARGV[1])
redis.call('hdel', KEYS[7], ARGV[1])
return 1
"""


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


@dataclass(frozen=True, slots=True)
class JobState:
    """What Redis holds for one job."""

    raw_result: bytes | None
    running: bool
    score: float | None
    job_exists: bool
    tries: int


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
        self._claim = redis.register_script(CLAIM_SCRIPT)
        self._promote = redis.register_script(PROMOTE_SCRIPT)
        self._abort = redis.register_script(ABORT_SCRIPT)
        self._back_in_line = redis.register_script(BACK_IN_LINE_SCRIPT)

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
        async with self.redis.pipeline(transaction=False) as pipe:
            for index, job in enumerate(jobs):
                payload = serialize_job(
                    job.function, (), job.kwargs, job.job_try, job.enqueued_ms, serializer=serialize
                )
                deferred = job.run_at_ms > now_ms
                # Equal scores sort by id; a fraction of a millisecond keeps a batch in order
                # (a double holds 12 bits below the millisecond at today's timestamps).
                score = self.score(job.priority, job.run_at_ms, now_ms) + index / 4096
                fair_field = f"{job.owner}|{job.priority.value}" if job.owner else ""
                await self._push(
                    keys=[
                        keys.job_key_prefix + job.job_id,
                        keys.result_key_prefix + job.job_id,
                        self.queue_name,
                        keys.abort_jobs_ss,
                        keys.deferred_set(self.queue_name),
                        keys.priority_offsets(self.queue_name),
                        keys.retry_key_prefix + job.job_id,
                        keys.fair_clocks(self.queue_name),
                    ],
                    args=[
                        payload,
                        max(job.run_at_ms - now_ms, 0) + JOB_KEY_TTL_MS,
                        score,
                        job.job_id,
                        self.offset(job.priority),
                        int(deferred),
                        fair_field,
                        now_ms,
                        self.fair_step_ms,
                        self.fair_cap_ms,
                    ],
                    client=pipe,
                )
            if wake:
                pipe.publish(self.wake_channel, b"1")
            outcomes = await pipe.execute()
        return [bool(ok) for ok in outcomes[: len(jobs)]]

    async def defer_priority(self, job_id: str, *, run_at_ms: float, priority: Priority) -> None:
        """Give a job that ARQ re-queued for later (a retry) its priority back when it is due."""
        offset = self.offset(priority)
        if offset == 0:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.deferred_set(self.queue_name), {job_id: run_at_ms})
            pipe.hset(keys.priority_offsets(self.queue_name), job_id, str(offset))
            await pipe.execute()

    async def claim(
        self, limit: int, *, lease_ms: int, now_ms: int, max_scan: int = 10_000
    ) -> list[tuple[str, int]]:
        """Take up to `limit` ready jobs for this worker, highest priority first."""
        raw = await self._claim(
            keys=[self.queue_name],
            args=[now_ms, limit, lease_ms, keys.in_progress_key_prefix, max_scan],
        )
        return [(raw[i].decode(), int(float(raw[i + 1]))) for i in range(0, len(raw), 2)]

    async def promote(self, now_ms: int) -> int | None:
        """Promote due deferred jobs; the time the next one is due, if any."""
        nxt = await self._promote(
            keys=[
                keys.deferred_set(self.queue_name),
                self.queue_name,
                keys.priority_offsets(self.queue_name),
            ],
            args=[now_ms],
        )
        return int(float(nxt)) if nxt else None

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
