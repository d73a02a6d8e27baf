"""Live status streams: one Redis subscription per API process, fanned out to every stream.

Workers and the API publish each change of a job as a lifecycle event on `keys.job_events(job_id)`
(see `src.arq.events`). The `StreamHub` pattern-subscribes to all of them on ONE connection and
wakes the streams that watch the job, which then re-read its status. A stream so holds no Redis
connection of its own, and the caps (`ARQ_STREAMS_PER_OWNER`, `ARQ_STREAMS_PER_PROCESS`,
`ARQ_STREAM_MAX_SECONDS`) bound what one owner, and all of them, may hold open in a process.
While the subscription is down (Redis away), streams re-read every `STREAM_POLL_SECONDS`.

    async with StreamHub(arq_service, settings=arq_settings) as hub:
        stream = await hub.open(job_id)
        async for status in stream.updates(): ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Self

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from src.arq import keys
from src.arq.config import ArqSettings
from src.arq.exceptions import JobNotFound, StreamCapacityReached, StreamLimitReached
from src.arq.schemas import JobStatus, JobStatusResponse
from src.arq.service import SYSTEM, ArqService
from src.auth.schemas import Principal
from src.exceptions import ServiceUnavailable

logger = logging.getLogger(__name__)

# A stream re-reads the job at least this often while the subscription is down.
STREAM_POLL_SECONDS = 1.0
# ... and this often while it is up: a safety net for the few changes nobody announces (a
# killed worker's lease lapsing). A deferred job coming due is woken for at its time.
STREAM_IDLE_SECONDS = 15.0
# The hub pings Redis this often and reconnects when nothing at all (not even the pong) came
# back for three times that: a connection can die without a reset (a half-open socket).
HUB_PING_SECONDS = 5.0
HUB_RETRY_FIRST_SECONDS = 0.5
HUB_RETRY_MAX_SECONDS = 5.0
# What a re-read may meet besides an answer; the stream tries again on its next wake-up.
READ_ERRORS = (SQLAlchemyError, RedisError, OSError, TimeoutError)
WAITING_STATUSES = frozenset({JobStatus.DEFERRED, JobStatus.RETRYING})


class StreamEnd(StrEnum):
    """Why a stream's updates ended."""

    FINISHED = "finished"  # the job finished; its last state was sent
    MAX_LIFE = "max_life"  # ARQ_STREAM_MAX_SECONDS passed: the client reconnects
    CLOSED = "closed"  # the hub stopped (server shutdown): the client reconnects
    GONE = "gone"  # the job's record was removed (cleanup)


class JobStream:
    """One open status stream: its place under the caps and its wake-ups.

    Made by `StreamHub.open`; `close()` (idempotent, also called by the HTTP layer however the
    response ends) gives the place back."""

    def __init__(
        self, hub: StreamHub, job_id: str, *, principal: Principal, deadline: float
    ) -> None:
        self.hub = hub
        self.job_id = job_id
        self.principal = principal
        self.deadline = deadline  # event-loop time at which the stream's life is over
        self.first: JobStatusResponse  # set by `StreamHub.open` before the stream is handed out
        self.ended_by: StreamEnd | None = None
        self.closed = False
        self.wake = asyncio.Event()
        # The jobs whose announcements wake it (its own; more with `also_watch`), and those
        # announced since the last `take_woken` (all of them after the subscription was down).
        self.watching: set[str] = set()
        self.woken: set[str] = set()

    async def updates(self) -> AsyncIterator[JobStatusResponse]:
        """The job's status after each change since `first`; ends when the job finishes, the
        stream's life is over or the hub stops (`ended_by` says which)."""
        loop = asyncio.get_running_loop()
        last = self.first
        while not last.status.finished:
            remaining = self.deadline - loop.time()
            if remaining <= 0:
                self.ended_by = StreamEnd.MAX_LIFE
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, self.hub.reread_after(last))):
                    await self.wake.wait()
            if self.hub.closed or self.closed:
                self.ended_by = StreamEnd.CLOSED
                return
            # Cleared before the read: a change announced during it wakes the next round.
            self.wake.clear()
            try:
                current = await self.hub.service.get_job_status(
                    self.job_id, principal=self.principal
                )
            except JobNotFound:
                self.ended_by = StreamEnd.GONE
                return
            except READ_ERRORS:
                logger.debug("status stream of job %s: re-read failed", self.job_id)
                continue
            if _changed(last, current):
                last = current
                yield current
        self.ended_by = StreamEnd.FINISHED

    def also_watch(self, job_ids: Iterable[str]) -> None:
        """Be woken by these jobs' announcements too (their stored ids): a jobs page's rows on
        one stream, one place under the caps. The caller may see them (it read them)."""
        for job_id in job_ids:
            self.hub._watch(self, job_id)

    def take_woken(self) -> set[str]:
        """The watched jobs announced since the last call (their statuses may have changed)."""
        woken, self.woken = self.woken, set()
        return woken

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub._remove(self)
            self.wake.set()


class StreamHub:
    """One Redis subscription for every status stream of this process, and the streams' caps.

    `start()` in the app's lifespan (or `async with`), `stop()` at its end."""

    def __init__(
        self, service: ArqService, *, settings: ArqSettings, poll: float = STREAM_POLL_SECONDS
    ) -> None:
        self.service = service
        self.settings = settings
        self.poll = poll
        self.connected = False  # the subscription is up: changes arrive as announcements
        self.closed = True
        self._streams: set[JobStream] = set()
        self._by_job: dict[str, set[JobStream]] = {}
        self._by_owner: dict[str, set[JobStream]] = {}
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe (in the background: an absent Redis only means polling until it is back)."""
        if self._task is None:
            self.closed = False
            self._task = asyncio.create_task(self._listen(), name="status-stream-hub")

    async def stop(self) -> None:
        """Drop the subscription and end every open stream (each is told to reconnect)."""
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            # Bounded: a cancellation redis-py swallows inside a read must not hang shutdown.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), 2)
            self._task = None
        self.connected = False
        for stream in list(self._streams):
            stream.wake.set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- streams -----------------------------------------------------------------------------

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def open_streams_of(self, owner: str) -> int:
        return len(self._by_owner.get(owner, ()))

    def watchers_of(self, job_id: str) -> int:
        """How many open streams the job's announcements wake."""
        return len(self._by_job.get(job_id, ()))

    async def open(self, job_id: str, *, principal: Principal = SYSTEM) -> JobStream:
        """A stream of the job with its current status in `first`.

        Raises `JobNotFound` (unknown or someone else's job), `StreamLimitReached` (the owner
        holds `streams_per_owner` streams) or `StreamCapacityReached` (the process holds
        `streams_per_process`); the caps are checked first, so a refusal costs no query."""
        if self.closed:
            raise ServiceUnavailable(
                "the server is shutting down; retry shortly", headers={"Retry-After": "2"}
            )
        now = asyncio.get_running_loop().time()
        owned = self._by_owner.get(principal.owner, set())
        if len(owned) >= self.settings.streams_per_owner:
            raise StreamLimitReached(self.settings.streams_per_owner, _retry_after(owned, now))
        if len(self._streams) >= self.settings.streams_per_process:
            raise StreamCapacityReached(
                self.settings.streams_per_process, _retry_after(self._streams, now)
            )
        stream = JobStream(
            self, job_id, principal=principal, deadline=now + self.settings.stream_max_seconds
        )
        # Counted under the caps at once (before any await), so that concurrent opens cannot
        # all pass the check.
        self._streams.add(stream)
        self._by_owner.setdefault(principal.owner, set()).add(stream)
        try:
            # Woken by the id the job is stored and announced under (a client may name its own
            # by the id it chose), registered before the first read so that no change
            # announced meanwhile is missed.
            stream.job_id = await self.service.resolve_job_id(job_id, principal=principal)
            self._watch(stream, stream.job_id)
            stream.first = await self.service.get_job_status(stream.job_id, principal=principal)
        except BaseException:
            stream.close()
            raise
        return stream

    def reread_after(self, last: JobStatusResponse) -> float:
        """Seconds a stream may wait for an announcement before it re-reads anyway."""
        seconds = STREAM_IDLE_SECONDS if self.connected else self.poll
        if last.status in WAITING_STATUSES:
            # A deferred job turns queued when its time comes, and nobody announces that.
            due = (last.scheduled_for - datetime.now(UTC)).total_seconds()
            if due > 0:
                seconds = min(seconds, due + 0.05)
        return seconds

    def _watch(self, stream: JobStream, job_id: str) -> None:
        if not stream.closed:
            stream.watching.add(job_id)
            self._by_job.setdefault(job_id, set()).add(stream)

    def _remove(self, stream: JobStream) -> None:
        self._streams.discard(stream)
        places = [(self._by_job, job_id) for job_id in stream.watching]
        for index, key in [*places, (self._by_owner, stream.principal.owner)]:
            members = index.get(key)
            if members is not None:
                members.discard(stream)
                if not members:
                    del index[key]

    # -- the subscription --------------------------------------------------------------------

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        pattern = keys.job_events("*")
        prefix = keys.job_events("")
        delay = HUB_RETRY_FIRST_SECONDS
        while True:
            pubsub = self.service.redis.pubsub()
            try:
                await pubsub.psubscribe(pattern)
                heard = pinged = loop.time()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    now = loop.time()
                    if message is not None:
                        heard = now
                        kind = message["type"]
                        if kind == "pmessage":
                            self._dispatch(message["channel"], prefix)
                        elif kind == "psubscribe":
                            # Confirmed: every change from now on is announced to us.
                            self._set_connected(True)
                            delay = HUB_RETRY_FIRST_SECONDS
                    elif now - heard > 3 * HUB_PING_SECONDS:
                        raise RedisConnectionError("no answer from Redis on the subscription")
                    if now - pinged >= HUB_PING_SECONDS:
                        pinged = now
                        await pubsub.ping()
            except (RedisError, OSError) as exc:
                if self.connected:
                    logger.warning(
                        "status streams lost their Redis subscription (%s); they re-read every "
                        "%s s until it is back",
                        type(exc).__name__,
                        self.poll,
                    )
                self._set_connected(False)
            finally:
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    async with asyncio.timeout(1):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, HUB_RETRY_MAX_SECONDS)

    def _dispatch(self, channel: bytes | str, prefix: str) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        # Pub/sub spans every Redis database: ids of other databases' jobs simply match nothing.
        job_id = name[len(prefix) :]
        for stream in self._by_job.get(job_id, ()):
            stream.woken.add(job_id)
            stream.wake.set()

    def _set_connected(self, connected: bool) -> None:
        if connected == self.connected:
            return
        self.connected = connected
        # Either way every stream re-reads now: announcements may have been missed while the
        # subscription was down, and a stream's wait depends on whether it is up.
        for stream in self._streams:
            stream.woken.update(stream.watching)
            stream.wake.set()


def _retry_after(streams: set[JobStream], now: float) -> int:
    """Seconds until the first of `streams` reaches its end of life: a slot is free by then."""
    if not streams:
        return 1
    return max(1, math.ceil(min(stream.deadline for stream in streams) - now))


def _changed(before: JobStatusResponse, after: JobStatusResponse) -> bool:
    fields = ("status", "progress", "message", "tries", "scheduled_for", "finished_at")
    return any(getattr(before, name) != getattr(after, name) for name in fields)
