"""The module's Redis scripts (Lua) and how they are sent: several calls in one pipeline, by SHA.

All scripts touch only keys of one job and the module's sets; they assume one Redis (as ARQ does).
`src.arq.queue` says what each operation means for a job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from arq.connections import ArqRedis
from arq.constants import abort_job_max_age
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

# Queue jobs, each unless its id is held (job or result); one reply (1 queued, 0 held) a job.
# Clears what an earlier job under the same id may have left: a stale abort mark (arq #485) and
# the try counter. Fair share: the owner's virtual clock (KEYS[5], the job's field) says how far
# their backlog at this priority pushes the job back (never beyond ARGV[6] ms); a deferred job
# carries that into its promotion offset. KEYS: queue, abort set, deferred set, priority
# offsets, fair clocks. ARGV: job, result and try key prefixes, now, fair step, fair cap, then
# 7 a job: id, payload, key TTL (ms), score, priority offset, deferred (1/0), field.
PUSH_SCRIPT = """
local job_prefix, result_prefix, retry_prefix = ARGV[1], ARGV[2], ARGV[3]
local now, step, cap = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local out = {}
for i = 7, #ARGV, 7 do
  local id, score, offset = ARGV[i], tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  local deferred, field = ARGV[i + 5] == '1', ARGV[i + 6]
  local job_key = job_prefix .. id
  if redis.call('exists', job_key, result_prefix .. id) > 0 then
    out[#out + 1] = 0
  else
    local penalty = 0
    if step > 0 and field ~= '' then
      local clock = math.max(tonumber(redis.call('hget', KEYS[5], field) or '0'), now)
      if clock > now + cap then clock = now + cap end
      penalty = clock - now
      redis.call('hset', KEYS[5], field, string.format('%.0f', clock + step))
      -- A clock behind now means nothing: the hash lives only while someone queues.
      redis.call('pexpire', KEYS[5], cap + step + 60000)
    end
    if not deferred then score = score + penalty end
    redis.call('psetex', job_key, ARGV[i + 2], ARGV[i + 1])
    redis.call('zadd', KEYS[1], score, id)
    redis.call('zrem', KEYS[2], id)
    redis.call('del', retry_prefix .. id)
    if deferred and offset - penalty ~= 0 then
      redis.call('zadd', KEYS[3], score, id)
      redis.call('hset', KEYS[4], id, string.format('%.0f', offset - penalty))
    end
    out[#out + 1] = 1
  end
end
return out
"""
# Jobs one PUSH_SCRIPT call queues at most (Redis runs nothing else during a call).
PUSH_CHUNK = 250

# Claim up to ARGV[2] ready jobs that no worker holds, in score order, skipping held ones: set
# their in-progress lease and read what their run needs, as ARQ's run reads it (in its MULTI):
# the job's data, its try counter incremented (kept ARGV[8] s) and, if ARGV[9] is 1, whether an
# abort mark was waiting (taken off). Returns [id, score, data or false, try, aborted, ...].
CLAIM_SCRIPT = """
local now, limit, lease, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local batch, max_scan = 200, tonumber(ARGV[5])
local job_prefix, retry_prefix, retry_ttl = ARGV[6], ARGV[7], ARGV[8]
local check_abort = ARGV[9] == '1'
local claimed, found, offset = {}, 0, 0
while found < limit and offset < max_scan do
  local ids = redis.call(
    'zrangebyscore', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', offset, batch)
  if #ids == 0 then break end
  for i = 1, #ids, 2 do
    local id = ids[i]
    local key = prefix .. id
    if redis.call('exists', key) == 0 then
      redis.call('psetex', key, lease, '1')
      local tries = redis.call('incr', retry_prefix .. id)
      redis.call('expire', retry_prefix .. id, retry_ttl)
      local aborted = 0
      if check_abort then aborted = redis.call('zrem', KEYS[2], id) end
      claimed[#claimed + 1] = id
      claimed[#claimed + 1] = ids[i + 1]
      claimed[#claimed + 1] = redis.call('get', job_prefix .. id)
      claimed[#claimed + 1] = tries
      claimed[#claimed + 1] = aborted
      found = found + 1
      if found >= limit then break end
    end
  end
  offset = offset + batch
end
return claimed
"""
# What a claim returns per job.
CLAIM_FIELDS = 5
# ARQ's worker drops abort marks scored more than this many ms past now on each poll.
ABORT_MAX_AGE_MS = abort_job_max_age
# How long a job's try counter lives (ARQ's 88400 s).
RETRY_KEY_SECONDS = 88_400

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

# A job's ending (ARQ's `finish_job` for an ended job, in one call): the result kept without an
# expiry (the history writer gives it one once recorded), the job's lease, try counter, data,
# abort mark and place in the queue gone, and a wake-up for whoever waits for it (ARGV[3]).
FINISH_SCRIPT = """
if ARGV[1] ~= '' then redis.call('set', KEYS[1], ARGV[1]) end
redis.call('del', KEYS[2], KEYS[3], KEYS[4])
redis.call('zrem', KEYS[5], ARGV[2])
redis.call('zrem', KEYS[6], ARGV[2])
redis.call('publish', KEYS[7], ARGV[3])
return 1
"""

# A claimed job whose stored data Redis lost: drop its lease, its try counter and its bare id,
# unless it was queued again meanwhile (its data is back).
DROP_CLAIM_SCRIPT = """
redis.call('del', KEYS[1])
if redis.call('exists', KEYS[3]) == 0 then
  redis.call('del', KEYS[4])
  redis.call('zrem', KEYS[2], ARGV[1])
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


# One script call: the script, its keys, its arguments.
ScriptCall = tuple[AsyncScript, Sequence[Any], Sequence[Any]]


async def run_scripts(
    redis: ArqRedis,
    calls: Sequence[ScriptCall],
    *,
    then: Callable[[Pipeline], object] | None = None,
) -> list[Any]:
    """The replies of `calls`, then of the commands `then` adds, sent in one pipeline, the
    scripts by their SHA: a pipeline given the scripts themselves asks Redis whether it holds
    them first, one round trip more each time. Calls of a script Redis does not hold (yet, or
    after a restart) did nothing; they are sent again once it is loaded. The first error, if
    any, is raised after every command was sent, as a pipeline raises it."""
    async with redis.pipeline(transaction=False) as pipe:
        for script, call_keys, call_args in calls:
            pipe.evalsha(script.sha, len(call_keys), *call_keys, *call_args)
        if then is not None:
            then(pipe)
        if not pipe.command_stack:
            return []
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    missing = [
        i for i, reply in enumerate(replies[: len(calls)]) if isinstance(reply, NoScriptError)
    ]
    if missing:
        for script in {calls[i][0] for i in missing}:
            script.sha = await redis.script_load(script.script)
        async with redis.pipeline(transaction=False) as pipe:
            for i in missing:
                script, call_keys, call_args = calls[i]
                pipe.evalsha(script.sha, len(call_keys), *call_keys, *call_args)
            for i, reply in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
