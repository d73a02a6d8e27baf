"""Circuit breakers shared through Redis: stop calling a service that keeps failing for a
cool-down, then let one probe call find out whether it is back.

A circuit is closed (calls go through) until `failures` calls in a row have failed; it is then
open for `cooldown` seconds: `admit()` refuses calls with `CircuitOpen`, which says until when.
After the cool-down it is half-open: the first caller takes the probe (`SET NX` with a lease)
and calls; the probe's success closes the circuit, its failure opens it for another cool-down;
other callers are refused while the probe is under way. Any success closes the circuit (the
service answered). The state is one Redis hash per circuit, changed by Lua scripts on Redis' own
clock, so every process on every host sees and moves the same circuit. A closed circuit's key
expires `FAILURE_MEMORY_COOLDOWNS` cool-downs after its last failure (its count is forgotten),
an open one's a cool-down after it could have been probed (nobody needed the service).

Which outcome is a failure is the caller's to say (VK: network errors, timeouts, 5xx, VK's
errors 1 and 10; a webhook host: the same of the receiver). A breaker whose Redis does not answer
lets calls through: it protects the service, it must not make an outage of its own.
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

KEY_PREFIX = "vkp:breaker:"
# A closed circuit forgets its failures this many cool-downs after the last one (at least 60 s).
FAILURE_MEMORY_COOLDOWNS = 10
MIN_FAILURE_MEMORY_MS = 60_000
# A caller refused while a probe is under way looks again after at most this long.
HALF_OPEN_RECHECK_SECONDS = 2.0
REDIS_ERRORS = (RedisError, OSError)

# KEYS[1]: the circuit's hash, KEYS[2]: its probe lease. ARGV[1]: the lease (ms), ARGV[2]: token.
# Returns {verdict, until (ms), now (ms), failures}: verdict 0 closed (call), 1 open (refused
# until `until`), 2 the probe (call), 3 half-open with a probe under way (refused until its lease
# ends at the latest).
ADMIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'open_until', 'failures')
local open_until = tonumber(state[1] or '0')
local failures = tonumber(state[2] or '0')
if open_until == 0 then return {0, 0, now, failures} end
if now < open_until then return {1, open_until, now, failures} end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[1]) then
  return {2, open_until, now, failures}
end
return {3, now + math.max(redis.call('PTTL', KEYS[2]), 0), now, failures}
"""

# KEYS[1]: the circuit's hash, KEYS[2]: its probe lease, KEYS[3]: the group's index of open
# circuits (member -> open until, ms), KEYS[4]: the group's cool-down (ms, for readers of the
# index). ARGV: outcome ('ok', 'fail' or 'none'), the caller's probe token ('' if it holds none),
# threshold, cool-down (ms), failure memory (ms), member in the index ('' for a circuit of no
# group). Returns {open (0/1), failures, opened, closed, until}.
SETTLE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local probing = ARGV[2] ~= '' and redis.call('GET', KEYS[2]) == ARGV[2]
if probing then redis.call('DEL', KEYS[2]) end
local state = redis.call('HMGET', KEYS[1], 'open_until', 'failures')
local open_until = tonumber(state[1] or '0')
local failures = tonumber(state[2] or '0')
local is_open = 0
if open_until > 0 then is_open = 1 end
if ARGV[1] == 'none' then return {is_open, failures, 0, 0, open_until} end
if ARGV[1] == 'ok' then
  if open_until == 0 and failures == 0 then return {0, 0, 0, 0, 0} end
  redis.call('DEL', KEYS[1])
  if ARGV[6] ~= '' then redis.call('ZREM', KEYS[3], ARGV[6]) end
  return {0, 0, 0, is_open, 0}
end
if open_until > 0 and now < open_until then
  -- Open already: a call that began before it opened.
  return {1, failures, 0, 0, open_until}
end
failures = failures + 1
if open_until == 0 and failures < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'failures', failures)
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {0, failures, 0, 0, 0}
end
local cooldown = tonumber(ARGV[4])
open_until = now + cooldown
redis.call('HSET', KEYS[1], 'failures', failures, 'open_until', open_until)
redis.call('PEXPIRE', KEYS[1], 2 * cooldown)
if ARGV[6] ~= '' then
  redis.call('ZADD', KEYS[3], open_until, ARGV[6])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - cooldown)
  redis.call('PEXPIRE', KEYS[3], 2 * cooldown)
  redis.call('SET', KEYS[4], cooldown, 'PX', 2 * cooldown)
end
return {1, failures, 1, 0, open_until}
"""

# KEYS[1]: a group's index, KEYS[2]: its cool-down. Drops the circuits whose keys have expired
# (all of them once the cool-down's key has: no circuit opened for two cool-downs); returns
# {open, half_open, latest open-until (ms)}.
GROUP_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cooldown = redis.call('GET', KEYS[2])
if not cooldown then
  redis.call('DEL', KEYS[1])
  return {0, 0, 0}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(cooldown))
local open = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local latest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local until_ms = 0
if latest[2] then until_ms = tonumber(latest[2]) end
return {open, redis.call('ZCARD', KEYS[1]) - open, until_ms}
"""


class CircuitState(StrEnum):
    """`closed`: calls go through; `open`: refused until the cool-down ends; `half_open`: the
    cool-down has ended and one probe call decides."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _stamp(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


class CircuitOpen(Exception):
    """The circuit refuses the call: open until `until`, or half-open while a probe is under way
    (`until`: its lease's end). `retry_after`: seconds to wait, with a little jitter."""

    def __init__(self, name: str, state: CircuitState, until: datetime, retry_after: float) -> None:
        self.name = name
        self.state = state
        self.until = until
        self.retry_after = retry_after
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        """`VK unavailable, circuit open until 2026-01-01T12:00:30Z` (what a waiting job says)."""
        if self.state is CircuitState.HALF_OPEN:
            return (
                f"{self.name} unavailable, circuit half-open: a probe call is under way "
                f"(until {_stamp(self.until)} at most)"
            )
        return f"{self.name} unavailable, circuit open until {_stamp(self.until)}"


@dataclass(frozen=True, slots=True)
class Ticket:
    """Leave for one call. `probe`: it is the half-open circuit's one probe (its `token` holds
    the lease); `clean`: the circuit had no failure on record, so a success changes nothing."""

    probe: bool = False
    token: str = ""
    clean: bool = False


@dataclass(frozen=True, slots=True)
class Settled:
    """What a call's outcome did: the circuit's state after it, and whether it opened (or
    re-opened) or closed the circuit."""

    state: CircuitState
    failures: int = 0
    opened: bool = False
    closed: bool = False
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A circuit as Redis holds it now."""

    state: CircuitState
    failures: int
    open_until: datetime | None


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    """A group of circuits (one per webhook host and owner, say): how many are open or half-open,
    and the latest end of a cool-down among them."""

    open: int
    half_open: int
    latest_until: datetime | None

    @property
    def state(self) -> CircuitState:
        """The worst state in the group."""
        if self.open:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN if self.half_open else CircuitState.CLOSED


class CircuitBreaker:
    """One circuit, shared through Redis by every process that builds it with the same `key`.

    `name` is what refusals say ("VK unavailable, …"). `probe_lease`: seconds the probe may take
    before another caller may probe (longer than the call's own timeout). `group`/`member`: the
    circuit also keeps its place in a group's index of open circuits (`group_snapshot`).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        name: str,
        key: str,
        failures: int,
        cooldown: float,
        probe_lease: float,
        group: str | None = None,
        member: str = "",
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1 (no breaker: do not build one)")
        if cooldown <= 0 or probe_lease <= 0:
            raise ValueError("cooldown and probe_lease must be positive")
        if (group is None) != (not member):
            raise ValueError("give group and member together")
        self.redis = redis
        self.name = name
        self.key = key
        self.failures = failures
        self.cooldown_ms = max(1, round(cooldown * 1000))
        self.probe_lease_ms = max(1, round(probe_lease * 1000))
        self.memory_ms = max(MIN_FAILURE_MEMORY_MS, FAILURE_MEMORY_COOLDOWNS * self.cooldown_ms)
        self.group = group
        self.member = member
        self._admit = redis.register_script(ADMIT_SCRIPT)
        self._settle = redis.register_script(SETTLE_SCRIPT)

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self.name!r}, failures={self.failures}, "
            f"cooldown={self.cooldown_ms / 1000:g}s)"
        )

    @property
    def probe_key(self) -> str:
        return self.key + ":probe"

    async def admit(self) -> Ticket:
        """Leave for one call, or `CircuitOpen` while the circuit refuses calls."""
        token = uuid.uuid4().hex
        try:
            verdict, until, now, failures = await self._admit(
                keys=[self.key, self.probe_key], args=[self.probe_lease_ms, token]
            )
        except REDIS_ERRORS as exc:
            logger.warning("circuit %s unreadable (%s): the call goes through", self.name, exc)
            return Ticket()
        if verdict == 0:
            return Ticket(clean=int(failures) == 0)
        if verdict == 2:
            logger.info("circuit %s half-open: this call is the probe", self.name)
            return Ticket(probe=True, token=token)
        wait = max(0.0, (int(until) - int(now)) / 1000)
        if verdict == 3:
            state = CircuitState.HALF_OPEN
            wait = min(wait, HALF_OPEN_RECHECK_SECONDS)
        else:
            state = CircuitState.OPEN
        # Jitter, so that the callers refused together do not all come back at once.
        wait += random.uniform(0, min(1.0, 0.1 * wait + 0.05))
        raise CircuitOpen(self.name, state, _at(int(until)), wait)

    async def succeeded(self, ticket: Ticket) -> Settled:
        """The call got an answer: the circuit closes (its failures are forgotten)."""
        if ticket.clean and not ticket.probe:
            return Settled(CircuitState.CLOSED)
        return await self._record("ok", ticket)

    async def failed(self, ticket: Ticket) -> Settled:
        """The call failed: one more in a row; the `failures`-th (or a failed probe) opens it."""
        settled = await self._record("fail", ticket)
        if settled.opened:
            logger.warning(
                "circuit %s open until %s after %d failure(s) in a row",
                self.name,
                _stamp(settled.until) if settled.until else "?",
                settled.failures,
            )
        return settled

    async def release(self, ticket: Ticket) -> None:
        """The call made no attempt that says anything (refused by a guard, throttled): a probe
        lets go of its lease, the circuit stays as it is."""
        if ticket.probe:
            await self._record("none", ticket)

    async def _record(self, outcome: str, ticket: Ticket) -> Settled:
        args: list[str | int] = [
            outcome,
            ticket.token if ticket.probe else "",
            self.failures,
            self.cooldown_ms,
            self.memory_ms,
            self.member,
        ]
        try:
            is_open, failures, opened, closed, until = await self._settle(
                keys=[self.key, self.probe_key, *_group_keys(self.group or self.key)], args=args
            )
        except REDIS_ERRORS as exc:
            logger.warning("circuit %s not updated (%s)", self.name, exc)
            return Settled(CircuitState.CLOSED)
        if closed:
            logger.info("circuit %s closed: the service answers again", self.name)
        return Settled(
            CircuitState.OPEN if is_open else CircuitState.CLOSED,
            failures=int(failures),
            opened=bool(opened),
            closed=bool(closed),
            until=_at(int(until)) if int(until) else None,
        )

    async def snapshot(self) -> Snapshot:
        """The circuit's state now (on Redis' clock)."""
        return await circuit_snapshot(self.redis, self.key)


async def circuit_snapshot(redis: Redis, key: str) -> Snapshot:
    """The state now (on Redis' clock) of the circuit at `key`; none there is a closed one."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.time()
        pipe.hmget(key, ["open_until", "failures"])
        (seconds, micros), (raw_until, raw_failures) = await pipe.execute()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    until = int(raw_until or 0)
    failures = int(raw_failures or 0)
    if not until:
        return Snapshot(CircuitState.CLOSED, failures, None)
    state = CircuitState.OPEN if now_ms < until else CircuitState.HALF_OPEN
    return Snapshot(state, failures, _at(until))


def _group_keys(group: str) -> list[str]:
    """A group's index of open circuits and the key of its cool-down."""
    return [group, group + ":cooldown"]


async def group_snapshot(redis: Redis, group: str) -> GroupSnapshot:
    """How many circuits of `group` are open or half-open now (and forget expired ones)."""
    script = redis.register_script(GROUP_SCRIPT)
    open_count, half_open, until = await script(keys=_group_keys(group))
    return GroupSnapshot(int(open_count), int(half_open), _at(int(until)) if int(until) else None)
