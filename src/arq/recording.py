"""Worker-side writes of the job history: starts, endings, re-queues, and change events.

A worker records through one `HistoryWriter`, which gathers what its jobs report for a few
milliseconds and writes it in one transaction: the database commit, the dominant cost, is paid
per batch instead of twice per job. Records keep their order (a start before its ending). A
record lost to a database outage is not lost for good: the reconciliation and every status read
copy a job's ending from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq import history, keys
from src.arq.outcome import ms_to_datetime, now_ms, outcome_from_result
from src.arq.queue import JobQueue
from src.arq.schemas import Priority
from src.arq.serialization import deserialize

logger = logging.getLogger(__name__)

HISTORY_ERRORS = (SQLAlchemyError, OSError, TimeoutError)
# A batch whose transaction failed is written again after this long, up to this many times.
RETRY_SECONDS = 1.0
WRITE_ATTEMPTS = 30


async def announce(redis: Any, *job_ids: str) -> None:
    """Tell status streams that these jobs changed (best effort)."""
    if not job_ids:
        return
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.publish(keys.job_events(job_id), b"1")
            await pipe.execute()
    except (RedisError, OSError):
        logger.debug("could not announce changes of %d job(s)", len(job_ids))


@dataclass(frozen=True, slots=True)
class _Start:
    job_id: str
    job_try: int
    at: datetime


@dataclass(frozen=True, slots=True)
class _End:
    job_id: str
    job_try: int | None  # None: ARQ ended it without running it (aborted before start, ...)
    attempts: int = 0  # writes of this record that failed so far


class HistoryWriter:
    """Batches a worker's history records; `close()` writes what is left."""

    def __init__(
        self,
        *,
        queue: JobQueue,
        sessionmaker: async_sessionmaker[AsyncSession],
        delay: float = 0.005,
        max_batch: int = 500,
        notify: Callable[[list[str]], Awaitable[object]] | None = None,
        keep_result_ms: int = 3_600_000,
    ) -> None:
        self.queue = queue
        # Workers store endings without an expiry; once recorded they get this long in Redis.
        self.keep_result_ms = keep_result_ms
        self.sessionmaker = sessionmaker
        # Called with the jobs whose recorded ending owes a completion webhook.
        self.notify = notify
        self.delay = delay
        self.max_batch = max_batch
        self._pending: list[_Start | _End] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Endings as the worker made them (ARQ's result records), until recorded: the history
        # gets them even when Redis is unreachable or lost them meanwhile (an empty restart).
        self._endings: dict[str, bytes] = {}

    def started(self, job_id: str, job_try: int, at: datetime) -> None:
        self._add(_Start(job_id, job_try, at))

    def ended(self, job_id: str, job_try: int | None) -> None:
        self._add(_End(job_id, job_try))

    def remember(self, job_id: str, result_data: bytes) -> None:
        """Keep a job's ending (ARQ's serialised result) until the history has it."""
        self._endings[job_id] = result_data

    def _add(self, record: _Start | _End) -> None:
        self._pending.append(record)
        self._idle.clear()
        self._ready.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def flush(self) -> None:
        """Wait until everything recorded so far is written."""
        await self._idle.wait()

    async def close(self) -> None:
        self._closing = True
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            if not self._closing and len(self._pending) < self.max_batch:
                await asyncio.sleep(self.delay)  # let the records of concurrent jobs gather
            self._ready.clear()
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                await self._write(batch)
            except Exception:  # a record must never take the worker down
                logger.exception("could not write %d job record(s)", len(batch))
            if self._pending:
                self._ready.set()
            else:
                self._idle.set()

    def _retry_later(self, ends: list[_End]) -> None:
        again = [
            _End(end.job_id, end.job_try, end.attempts + 1)
            for end in ends
            if end.attempts < WRITE_ATTEMPTS
        ]
        for end in ends:
            if end.attempts >= WRITE_ATTEMPTS:
                self._endings.pop(end.job_id, None)  # left to the reconciliation
        if again and not self._closing:
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self._re_add, again)

    def _re_add(self, ends: list[_End]) -> None:
        for end in ends:
            self._add(end)

    async def _write(self, batch: list[_Start | _End]) -> None:
        starts = [record for record in batch if isinstance(record, _Start)]
        ends = [record for record in batch if isinstance(record, _End)]
        redis = self.queue.redis
        running = keys.running_set(self.queue.queue_name)
        replies: list[Any] | None
        try:
            async with redis.pipeline(transaction=False) as pipe:
                if starts:
                    pipe.zadd(running, {start.job_id: now_ms() for start in starts})
                for end in ends:
                    pipe.get(keys.result_key_prefix + end.job_id)
                    pipe.zscore(self.queue.queue_name, end.job_id)
                if ends:
                    pipe.zrem(running, *(end.job_id for end in ends))
                replies = await pipe.execute()
        except (RedisError, OSError):
            # The history is written all the same: endings from what the worker kept.
            logger.warning("could not read the state of %d job(s) from Redis", len(batch))
            replies = None
        offset = 1 if starts else 0
        states = {
            end.job_id: (
                (replies[offset + 2 * i] if replies is not None else None)
                or self._endings.get(end.job_id),
                replies[offset + 2 * i + 1] if replies is not None else None,
            )
            for i, end in enumerate(ends)
        }
        retries: list[tuple[str, float, str]] = []
        to_notify: list[str] = []
        recorded: list[str] = []
        try:
            async with self.sessionmaker.begin() as session:
                await history.mark_started_many(
                    session,
                    [{"b_id": s.job_id, "b_tries": s.job_try, "b_at": s.at} for s in starts],
                )
                info = await history.abort_and_priority(session, [end.job_id for end in ends])
                finished, waiting = [], []
                for end in ends:
                    raw_result, score = states[end.job_id]
                    aborted_by, priority, notify = info.get(
                        end.job_id, (None, Priority.NORMAL.value, False)
                    )
                    if raw_result:
                        outcome = outcome_from_result(
                            deserialize(raw_result), aborted_by=aborted_by
                        )
                        finished.append(history.finished_row(end.job_id, outcome))
                        if notify:
                            to_notify.append(end.job_id)
                    elif score is not None and end.job_try is not None:
                        # No ending and still queued: ARQ runs it again (a retry, a cancellation).
                        waiting.append(
                            {
                                "b_id": end.job_id,
                                "b_tries": end.job_try,
                                "b_at": ms_to_datetime(max(score, now_ms())),
                            }
                        )
                        if score > now_ms():
                            retries.append((end.job_id, score, priority))
                await history.mark_finished_many(session, finished)
                await history.mark_waiting_many(session, waiting)
            recorded = [row["b_id"] for row in finished]
            for end in ends:
                self._endings.pop(end.job_id, None)
        except HISTORY_ERRORS:
            # Tried again shortly (the endings also stay in Redis without an expiry, where a
            # status read or the reconciliation finds them).
            logger.warning("could not record %d job record(s)", len(batch), exc_info=True)
            self._retry_later(ends)
        try:
            await self.queue.expire_results(recorded, keep_ms=self.keep_result_ms)
        except (RedisError, OSError):
            logger.warning("could not set the expiry of %d recorded ending(s)", len(recorded))
        try:
            for job_id, score, priority in retries:
                await self.queue.defer_priority(
                    job_id, run_at_ms=score, priority=Priority(priority)
                )
        except (RedisError, OSError):
            logger.warning("could not restore the priority of %d retried job(s)", len(retries))
        await announce(redis, *{record.job_id for record in batch})
        if to_notify and self.notify is not None:
            try:
                await self.notify(to_notify)
            except (RedisError, *HISTORY_ERRORS):
                # The worker's periodic sweep queues them later.
                logger.warning("could not queue %d completion webhook(s)", len(to_notify))
