"""How a `JobWorker` stores its jobs' endings (the base class it adds to ARQ's `Worker`).

ARQ's ending, except that the result is kept until the history has recorded it, an ending is
tried again while Redis is unreachable, and the endings of one turn of the event loop are stored
in one pipeline (`src.arq.queue.JobQueue.finish_many`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import arq.worker as arq_worker
from redis.exceptions import RedisError

from src.arq.leases import LeaseRenewer
from src.arq.queue import JobQueue
from src.arq.reconcile import lost_by_redis
from src.arq.recording import HistoryWriter
from src.arq.service.group_commit import Rounds

logger = logging.getLogger("src.arq.worker")

# How long a worker keeps trying to store a job's ending while Redis is unreachable.
ENDING_WRITE_SECONDS = 300.0
# How long at most an ended job keeps its lease while the history has not recorded its ending
# (the history writer tries for about half a minute; then the reconciliation takes over).
ENDING_HOLD_SECONDS = 120.0


class EndingWorker(arq_worker.Worker):
    """ARQ's `Worker` with the endings of `JobWorker` (which sets what is declared here)."""

    leases: LeaseRenewer
    _leaving: bool  # exiting on a Redis outage: endings are tried once
    _endings: Rounds[tuple[str, bytes | None], None]

    @property
    def queue(self) -> JobQueue:
        """The worker's queue: `JobWorker` builds it (this class is never run on its own)."""
        raise NotImplementedError

    async def _store_endings(self, endings: list[tuple[str, bytes | None]]) -> list[None]:
        return await self.queue.finish_many(endings)

    def _store_ending(self, job_id: str, result_data: bytes | None) -> Awaitable[None]:
        return self._endings.submit((job_id, result_data))

    # -- endings ARQ writes without calling the job hooks ----------------------------------

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """ARQ's ending, except that the result is kept until the history has recorded it
        (the history writer then gives it `keep_result`): an ending the history missed for a
        while must not expire and make the job look lost, or it would run again. The history
        writer keeps a copy too, and a failed write to Redis is tried again (the job keeps its
        lease meanwhile), so an ending survives a Redis outage or an empty restart."""
        writer: HistoryWriter | None = self.ctx.get("history_writer")
        if not finish and keep_in_progress is None:
            # Going back to the queue: no renewal behind ARQ's back, nor a bare id re-queued.
            self.leases.given_back(job_id)
            if writer is not None:
                writer.going_again(job_id)
            await self._write_ending(
                job_id, lambda: self.queue.back_in_line(job_id, incr_score=incr_score)
            )
            return
        if finish and result_data and writer is not None:
            self._hold_until_recorded(writer, job_id, result_data)
        if finish and keep_in_progress is None:
            # ARQ's ending in one call, and a wake-up for whoever waits for the job.
            await self._write_ending(job_id, lambda: self._store_ending(job_id, result_data))
        else:  # a cron job of ARQ's own keeps its lease for a while
            await self._write_ending(
                job_id,
                lambda: super(EndingWorker, self).finish_job(
                    job_id,
                    finish,
                    result_data,
                    result_timeout_s,
                    keep_result_forever or bool(result_data),
                    incr_score,
                    keep_in_progress,
                ),
            )
        self.leases.given_back(job_id)
        if finish and writer is not None:
            writer.ending_stored(job_id)

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """Aborted before start, out of tries, expired: kept until recorded, and recorded;
        except a job Redis lost while this worker claimed it (`reconcile.lost_by_redis`)."""
        if await lost_by_redis(self.ctx.get("sessionmaker"), job_id, result_data):
            self.leases.given_back(job_id)
            await self._write_ending(job_id, lambda: self.queue.drop_claim(job_id))
            return
        writer: HistoryWriter | None = self.ctx.get("history_writer")
        if result_data is not None and writer is not None:
            self._hold_until_recorded(writer, job_id, result_data)

        # ARQ's own version, without an expiry on the result (nor its PX 0, arq #531).
        await self._write_ending(job_id, lambda: self._store_ending(job_id, result_data))
        self.leases.given_back(job_id)
        if writer is not None:
            writer.ended(job_id, None)

    def _hold_until_recorded(self, writer: HistoryWriter, job_id: str, result_data: bytes) -> None:
        """The writer keeps the ending until the history has it, and the job keeps its lease:
        an ending Redis loses meanwhile must not make the job look lost and run again."""
        self.leases.hold(job_id, seconds=ENDING_HOLD_SECONDS)
        writer.remember(job_id, result_data, settled=self.leases.release)

    async def _write_ending(self, job_id: str, write: Callable[[], Awaitable[None]]) -> None:
        """`write` a job's ending to Redis, trying again while Redis is unreachable (up to
        ENDING_WRITE_SECONDS; once when the worker exits on an outage): a lost ending would let
        the job run again."""
        deadline = time.monotonic() + ENDING_WRITE_SECONDS
        delay = 0.1
        while True:
            try:
                await write()
                return
            except (RedisError, OSError) as exc:
                if self._leaving or time.monotonic() >= deadline:
                    raise
                if delay == 0.1:
                    logger.warning(
                        "could not store the ending of job %s in Redis (%s); trying again",
                        job_id,
                        type(exc).__name__,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
