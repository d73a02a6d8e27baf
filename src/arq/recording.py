"""Worker-side writes of the job history: starts, endings, re-queues, and change events.

A worker records through one `HistoryWriter`, which writes what its jobs report in batches,
one transaction each: what comes while a batch is being written goes in the next one, so the
database commit, the dominant cost, is paid per batch instead of twice per job under load.
Records keep their order (a start before its ending). A
record lost to a database outage is not lost for good: the reconciliation and every status read
copy a job's ending from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq import history, history_writes, keys
from src.arq.events import EventKind, JobEvent, JobEvents
from src.arq.metrics import record_history_write
from src.arq.outcome import Outcome, ms_to_datetime, now_ms, outcome_from_result
from src.arq.queue import JobQueue
from src.arq.schemas import Priority
from src.arq.serialization import deserialize

logger = logging.getLogger(__name__)

HISTORY_ERRORS = (SQLAlchemyError, OSError, TimeoutError)
# What a batch needs of Redis, in one command (the module assumes one Redis, as ARQ does):
# ARGV = running set, queue, result prefix, now (ms), the number of starts, the started ids, the
# ended ids. Returns [ending or false, queue score or false] per end.
READ_STATE_SCRIPT = """
local running, queue, results = ARGV[1], ARGV[2], ARGV[3]
local now, starts = ARGV[4], tonumber(ARGV[5])
for i = 6, 5 + starts do redis.call('zadd', running, now, ARGV[i]) end
local out = {}
for i = 6 + starts, #ARGV do
  local id = ARGV[i]
  out[#out + 1] = redis.call('get', results .. id)
  out[#out + 1] = redis.call('zscore', queue, id)
  redis.call('zrem', running, id)
end
return out
"""
# A batch whose transaction failed is written again after this long, up to this many times.
RETRY_SECONDS = 1.0
WRITE_ATTEMPTS = 30


@dataclass(frozen=True, slots=True)
class _Start:
    job_id: str
    job_try: int
    at: datetime
    added: float = field(default_factory=time.monotonic)  # when the worker handed it over


@dataclass(frozen=True, slots=True)
class _End:
    job_id: str
    job_try: int | None  # None: ARQ ended it without running it (aborted before start, ...)
    # The worker gave the job back to run again (a retry, a cancellation), whatever Redis
    # shows by the time this is written (a fast next try may have ended it already).
    retrying: bool = False
    attempts: int = 0  # writes of this record that failed so far
    added: float = field(default_factory=time.monotonic)  # when the worker first handed it over


class HistoryWriter:
    """Batches a worker's history records; `close()` writes what is left."""

    def __init__(
        self,
        *,
        queue: JobQueue,
        sessionmaker: async_sessionmaker[AsyncSession],
        delay: float = 0.0,
        max_batch: int = 500,
        events: JobEvents | None = None,
        keep_result_ms: int = 3_600_000,
    ) -> None:
        self.queue = queue
        # Workers store endings without an expiry; once recorded they get this long in Redis.
        self.keep_result_ms = keep_result_ms
        self.sessionmaker = sessionmaker
        # Each recorded start, retry and ending is published here (after its transaction).
        self.events = events or JobEvents(queue.redis)
        self.delay = delay
        self._read_state = queue.redis.register_script(READ_STATE_SCRIPT)
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
        # Told when a remembered ending is recorded or left to the reconciliation (the worker
        # holds the job's lease until then).
        self._settled: dict[str, Callable[[str], None]] = {}
        self._going_again: dict[str, bool] = {}
        self._stored_endings: dict[str, bool] = {}
        # Starts not written (and announced) yet: a job's progress waits for its start.
        self._starts: dict[str, asyncio.Event] = {}

    def started(self, job_id: str, job_try: int, at: datetime) -> None:
        self._starts[job_id] = asyncio.Event()
        self._add(_Start(job_id, job_try, at))

    async def start_written(self, job_id: str) -> None:
        """Wait until the job's start is written and announced (or its write failed), so
        that what the job reports comes after its start, in the history and in the events."""
        event = self._starts.get(job_id)
        if event is not None:
            await event.wait()

    def ended(self, job_id: str, job_try: int | None) -> None:
        if self._stored_endings.pop(job_id, False):
            return  # handed over when the worker stored it (`ending_stored`)
        self._add(_End(job_id, job_try, retrying=self._going_again.pop(job_id, False)))

    def ending_stored(self, job_id: str) -> None:
        """The worker stored the job's ending in Redis: record it now, not from the run's end
        hook (a shutdown may cancel the run between the two); that hook's `ended` is then a
        no-op."""
        self._stored_endings[job_id] = True
        self._add(_End(job_id, None))

    def going_again(self, job_id: str) -> None:
        """The try that is ending gave the job back to the queue (said before its `ended`)."""
        self._going_again[job_id] = True

    def remember(
        self, job_id: str, result_data: bytes, *, settled: Callable[[str], None] | None = None
    ) -> None:
        """Keep a job's ending (ARQ's serialised result) until the history has it; then (or
        when the writer gives up on it) call `settled(job_id)`."""
        self._endings[job_id] = result_data
        if settled is not None:
            self._settled[job_id] = settled

    def _forget(self, job_id: str) -> None:
        if self._endings.pop(job_id, None) is not None and (
            settled := self._settled.pop(job_id, None)
        ):
            settled(job_id)

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
                # Let the records of jobs ending in this turn of the loop join (and, with a
                # delay, those of the next few milliseconds); records that come while a batch is
                # written go together in the next one.
                await asyncio.sleep(self.delay)
            self._ready.clear()
            batch, self._pending = _take_batch(self._pending, self.max_batch)
            try:
                await self._write(batch)
                record_history_write(len(batch), time.monotonic() - min(r.added for r in batch))
            except Exception:  # a record must never take the worker down
                logger.exception("could not write %d job record(s)", len(batch))
            for record in batch:
                if isinstance(record, _Start) and (done := self._starts.pop(record.job_id, None)):
                    done.set()
            if self._pending:
                self._ready.set()
            else:
                self._idle.set()

    def _retry_later(self, ends: list[_End]) -> None:
        again = [
            _End(end.job_id, end.job_try, end.retrying, end.attempts + 1, end.added)
            for end in ends
            if end.attempts < WRITE_ATTEMPTS
        ]
        for end in ends:
            if end.attempts >= WRITE_ATTEMPTS:
                self._forget(end.job_id)  # left to the reconciliation
        if again and not self._closing:
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self._re_add, again)

    def _re_add(self, ends: list[_End]) -> None:
        for end in ends:
            self._add(end)

    async def _write(self, batch: list[_Start | _End]) -> None:
        starts = [record for record in batch if isinstance(record, _Start)]
        ends = [record for record in batch if isinstance(record, _End)]
        replies: list[Any] | None
        try:
            # One round trip, one command: starts marked running, and for each end its ending
            # (if ARQ stored one) and its place in the queue (if it runs again).
            replies = await self._read_state(
                args=[
                    keys.running_set(self.queue.queue_name),
                    self.queue.queue_name,
                    keys.result_key_prefix,
                    now_ms(),
                    len(starts),
                    *(start.job_id for start in starts),
                    *(end.job_id for end in ends),
                ]
            )
        except (RedisError, OSError):
            # The history is written all the same: endings from what the worker kept.
            logger.warning("could not read the state of %d job(s) from Redis", len(batch))
            replies = None
        states = {
            end.job_id: (
                (replies[2 * i] if replies is not None else None) or self._endings.get(end.job_id),
                float(replies[2 * i + 1])
                if replies is not None and replies[2 * i + 1] is not None
                else None,
            )
            for i, end in enumerate(ends)
        }
        # A start whose ending this batch records needs no row update of its own: the
        # ending's sets the start time (ARQ's) and the try too. Half the updates of short jobs.
        ending_here = {
            end.job_id
            for end in ends
            if states[end.job_id][0] and not _runs_again(end, *states[end.job_id])
        }
        retries: list[tuple[str, float, str]] = []
        events: list[JobEvent] = []
        on_record: list[str] = []  # endings the history holds once the transaction is done
        try:
            async with self.sessionmaker.begin() as session:
                # First, as it locks the batch's rows in one order (against deadlocks with
                # other writers: each statement below would lock its own rows in its own order).
                facts = await history.job_facts(
                    session, [s.job_id for s in starts] + [end.job_id for end in ends]
                )
                await history_writes.mark_started_many(
                    session,
                    [
                        {"b_id": s.job_id, "b_tries": s.job_try, "b_at": s.at}
                        for s in starts
                        if s.job_id not in ending_here
                    ],
                )
                finished: list[dict[str, Any]] = []
                waiting: list[dict[str, Any]] = []
                order: list[_Start | dict[str, Any] | tuple[str, Outcome]] = []
                # A try's retry is not written over the next try's start in the same batch.
                last_start = {r.job_id: i for i, r in enumerate(batch) if isinstance(r, _Start)}
                for index, record in enumerate(batch):
                    if isinstance(record, _Start):
                        order.append(record)
                        continue
                    raw_result, score = states[record.job_id]
                    fact = facts.get(record.job_id)
                    if _runs_again(record, raw_result, score):
                        # ARQ runs it again (a retry, a cancellation).
                        at = max(score or 0, now_ms())
                        row = {"b_id": record.job_id, "b_tries": record.job_try, "b_at": at}
                        if last_start.get(record.job_id, -1) < index:
                            waiting.append({**row, "b_at": ms_to_datetime(at)})
                        order.append(row)
                        if score is not None and score > now_ms():
                            priority = fact.priority if fact else Priority.NORMAL.value
                            retries.append((record.job_id, score, priority))
                    elif raw_result:
                        outcome = outcome_from_result(
                            deserialize(raw_result), aborted_by=fact.aborted_by if fact else None
                        )
                        finished.append(history_writes.finished_row(record.job_id, outcome))
                        order.append((record.job_id, outcome))
                recorded = await history_writes.mark_finished_many(session, finished)
                await history_writes.mark_waiting_many(session, waiting)
            on_record = [row["b_id"] for row in finished]
            events = _events(order, set(recorded), facts)
            # Only an ending this batch wrote is let go: a remembered ending is a later try's
            # when this batch wrote an earlier try's retry (Redis may lose it before its turn).
            for job_id in on_record:
                self._forget(job_id)
        except HISTORY_ERRORS:
            # Tried again shortly (the endings also stay in Redis without an expiry, where a
            # status read or the reconciliation finds them).
            logger.warning("could not record %d job record(s)", len(batch), exc_info=True)
            self._retry_later(ends)
        try:
            await self.queue.expire_results(on_record, keep_ms=self.keep_result_ms)
        except (RedisError, OSError):
            logger.warning("could not set the expiry of %d recorded ending(s)", len(on_record))
        try:
            for job_id, score, priority in retries:
                await self.queue.defer_priority(
                    job_id, run_at_ms=score, priority=Priority(priority)
                )
        except (RedisError, OSError):
            logger.warning("could not restore the priority of %d retried job(s)", len(retries))
        await self.events.publish(events)


def _take_batch(
    pending: list[_Start | _End], size: int
) -> tuple[list[_Start | _End], list[_Start | _End]]:
    """The next batch (the first `size` records, plus the ending that comes next for each
    job the batch starts, so that the two share one row update) and what is left, each in
    order."""
    batch, rest = pending[:size], pending[size:]
    started: set[str] = set()  # started in the batch, not ended after that
    for record in batch:
        if isinstance(record, _Start):
            started.add(record.job_id)
        else:
            started.discard(record.job_id)
    left: list[_Start | _End] = []
    for record in rest:
        if record.job_id in started:
            started.discard(record.job_id)
            if isinstance(record, _End):
                batch.append(record)
                continue
        left.append(record)
    return batch, left


def _runs_again(end: _End, raw_result: bytes | None, score: float | None) -> bool:
    """The try that `end` ends gave the job back to run again (a retry, a cancellation): the
    worker said so, or Redis holds no ending and has the job queued."""
    return end.job_try is not None and (end.retrying or (not raw_result and score is not None))


def _events(
    order: list[_Start | dict[str, Any] | tuple[str, Outcome]],
    recorded: set[str],
    facts: dict[str, history.JobFacts],
) -> list[JobEvent]:
    """The events of a written batch, in the order of its records: starts, retries, and the
    endings this batch recorded (once each; an ending recorded elsewhere first was announced
    there)."""

    def fact(job_id: str) -> tuple[str | None, str | None]:
        found = facts.get(job_id)
        return (found.function, found.owner) if found else (None, None)

    events: list[JobEvent] = []
    announced: set[str] = set()
    for item in order:
        if isinstance(item, _Start):
            found = facts.get(item.job_id)
            wait = (item.at - found.due_at).total_seconds() if found else None
            events.append(
                JobEvent(
                    EventKind.STARTED,
                    item.job_id,
                    *fact(item.job_id),
                    job_try=item.job_try,
                    queue_wait_seconds=None if wait is None else max(0.0, wait),
                )
            )
        elif isinstance(item, dict):
            events.append(
                JobEvent(
                    EventKind.RETRYING, item["b_id"], *fact(item["b_id"]), job_try=item["b_tries"]
                )
            )
        elif item[0] in recorded and item[0] not in announced:
            job_id, outcome = item
            announced.add(job_id)
            function, owner = fact(job_id)
            found = facts.get(job_id)
            events.append(
                JobEvent.ending(
                    job_id,
                    outcome,
                    function=function,
                    owner=owner,
                    notify=bool(found and found.notify),
                )
            )
    return events
