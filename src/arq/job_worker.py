"""`JobWorker`: ARQ's `Worker` with what ARQ lacks, without forking it.

- it claims only as many jobs as it has free slots (and `queue_read_limit`), atomically and in
  score order, so priorities are strict and a job read from the queue never waits behind a
  busy slot; each look at the queue is one round trip, and the claim reads what ARQ's run reads
  first (`src.arq.job_run` runs the job as ARQ's `run_job` does); the endings of one turn of
  the loop are stored in one pipeline;
- it sleeps until a job is queued (a Redis pub/sub wake-up), a slot frees, a deferred job falls
  due or the poll delay passes, whichever comes first;
- running jobs hold a short lease (`ARQ_LEASE`) that a thread of the worker renews, so a killed
  worker's jobs run again within one lease instead of after the longest timeout + 10 s, and a
  job that holds the event loop cannot lose its lease;
- a Redis outage does not kill it: it waits and carries on (or exits once it has lasted
  `ARQ_REDIS_OUTAGE_EXIT_AFTER`); endings are kept until recorded;
- it reconciles the job history with Redis (see `src.arq.reconcile`) at start and every
  `ARQ_RECONCILE_INTERVAL`, one worker at a time, and runs the packages' sweeps with it;
- its log lines mask secret-looking arguments, a job's lines carry its ids, `delayed=` is
  measured from the job's ready time, not its priority-shifted score, and each run's start and
  finish lines are logged at `ARQ_JOB_LOG_LEVEL`;
- run by the `arq` CLI, it keeps what start-up loaded out of the garbage collector's sight.

Otherwise it is ARQ's: its arguments, attributes, burst mode and loop timing. Its own settings
come from `ctx["arq_settings"]` (`ArqSettings`' defaults without it). Importing this module makes
`arq.worker.Worker` name `JobWorker`, so the stock `arq` CLI (plain and `--watch`) builds it.
What the worker runs is set up in `src.arq.worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import signal
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import arq.worker as arq_worker
from arq.connections import create_pool, log_redis_info
from redis.exceptions import RedisError

from src import logs
from src.arq import keys
from src.arq.config import ArqSettings
from src.arq.event_loop import settle_garbage_collector, use_uvloop
from src.arq.job_logs import CONFIGURE_LOGGING, bind_run
from src.arq.job_run import run_claimed
from src.arq.leases import LeaseRenewer
from src.arq.outcome import now_ms
from src.arq.queue import Claim, JobQueue
from src.arq.reconcile import reconcile
from src.arq.recording import HISTORY_ERRORS
from src.arq.schedule_runs import queue_due_runs
from src.arq.schemas import Priority
from src.arq.scripts import RETRY_KEY_SECONDS
from src.arq.service import ArqService
from src.arq.service.group_commit import Rounds
from src.arq.worker_endings import EndingWorker
from src.arq.workers import WORKER_STATE, describe

logger = logging.getLogger("src.arq.worker")
arq_logger = logging.getLogger("arq.worker")  # ARQ's own lines keep their logger

# ARQ's own worker class, kept before `arq.worker.Worker` is rebound to `JobWorker` below.
_ArqWorker = arq_worker.Worker
ArqWorker = _ArqWorker


class JobWorker(EndingWorker):
    """ARQ's worker with strict priorities, wake-ups, leases, outage tolerance, reconciliation."""

    __signature__ = inspect.signature(_ArqWorker)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings: ArqSettings = self.ctx.get("arq_settings") or ArqSettings.defaults()
        self.settings = settings
        self.in_progress_timeout_s = settings.lease
        self._wake = asyncio.Event()
        self._queue: JobQueue | None = None
        self._next_due: int | None = None
        self._closing = False
        self._listener: asyncio.Task[None] | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._next_reconcile = 0.0
        self._redis_down_since: float | None = None
        self._leaving = False  # exiting on a Redis outage: endings are tried once
        self._own_process = False  # run by `run()` (the `arq` CLI), not inside another program
        self.leases = LeaseRenewer(lease_seconds=settings.lease)
        # Endings stored in the same turn of the loop (or while a round is in flight) share one
        # round trip.
        self._endings = Rounds[tuple[str, bytes | None], None](self._store_endings, lambda _: 1)
        self._job_line_level = logging.getLevelNamesMapping()[settings.job_log_level]
        self.ctx[WORKER_STATE] = functools.partial(describe, self)  # announced by the heartbeat

    @property
    def queue(self) -> JobQueue:
        if self._queue is None:
            self._queue = JobQueue(
                self.pool,
                queue_name=self.queue_name,
                aging_seconds=self.settings.priority_aging,
                fairness_step=self.settings.fairness_step,
                fairness_cap=self.settings.fairness_cap_seconds,
            )
        return self._queue

    def _job_done(self, job_id: str) -> Any:
        def done(_: asyncio.Task[None]) -> None:
            self.leases.given_back(job_id)
            self._release_sem_dec_counter_on_complete()

        return done

    # -- the loop --------------------------------------------------------------------------

    async def main(self) -> None:
        """ARQ's `main`, its lines carrying the worker's id; its loop waits for wake-ups,
        outlasts Redis outages and ends once the worker is closed."""
        configure: Callable[[], object] | None = self.ctx.get(CONFIGURE_LOGGING)
        if configure is not None:
            configure()
        # What `on_startup` binds (the worker's id) is on its lines until the worker stops.
        token = logs.bind({})
        try:
            await self._main()
        finally:
            logs.reset(token)  # an in-process worker's caller gets its own context back

    async def _main(self) -> None:
        self._closing = False
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        functions = ", ".join(self.functions)
        arq_logger.info("Starting worker for %d functions: %s", len(self.functions), functions)
        await log_redis_info(self.pool, arq_logger.info)
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        if self._own_process:
            settle_garbage_collector()
        while self._pool is not None and not self._closing:
            started = self.loop.time()
            try:
                await self._poll_iteration()
                # ARQ's burst exit: after the poll that finds the queue empty, not a poll later.
                if self.burst and (
                    0 <= self.max_burst_jobs <= self._jobs_started()
                    or await self.pool.zcard(self.queue_name) == 0
                ):
                    await asyncio.gather(*self.tasks.values())
                    return
                self._redis_reachable()
            except (RedisError, OSError) as exc:
                if self._pool is None or self._closing:
                    return
                self._redis_unreachable(exc)
            await self._sleep(self.poll_delay_s - (self.loop.time() - started))

    async def run_job(self, job_id: str, score: int) -> None:
        """ARQ's run of one job claimed without what its run needs: read as ARQ reads it (one
        MULTI), then run as the worker's own claims run (`_run_claimed`)."""
        async with self.pool.pipeline(transaction=True) as pipe:
            pipe.get(keys.job_key_prefix + job_id)
            pipe.incr(keys.retry_key_prefix + job_id)
            pipe.expire(keys.retry_key_prefix + job_id, RETRY_KEY_SECONDS)
            if self.allow_abort_jobs:
                pipe.zrem(keys.abort_jobs_ss, job_id)
            replies = await pipe.execute()
        aborted = bool(replies[3]) if self.allow_abort_jobs else False
        await self._run_claimed(Claim(job_id, score, replies[0], int(replies[1]), aborted))

    async def _run_claimed(self, claim: Claim) -> None:
        """One claimed job's run, every line of it carrying the job's ids (`src.arq.job_logs`)
        and its start line the delay from its ready time (`src.arq.log_masking`)."""
        token = bind_run(claim.job_id, self.ctx.get("worker_id"))
        try:
            await run_claimed(
                self, claim, line_level=self._job_line_level, offset_ms=self._priority_offset
            )
        finally:
            logs.reset(token)

    def _priority_offset(self, priority: str) -> int:
        return self.queue.offset(Priority(priority))

    async def _poll_iteration(self) -> None:
        """ARQ's poll: claim and start ready jobs, cancel aborted ones, clean up, heartbeat;
        Redis errors are raised, as ARQ raises them (`main` waits them out)."""
        self._wake.clear()
        if self.settings.wake_on_enqueue and self._listener is None:
            self._listener = asyncio.create_task(self._listen())
        # One round trip: due deferred jobs promoted, ready ones claimed, abort marks read.
        found = await self.queue.poll(
            self._free_slots(),
            lease_ms=int(self.settings.lease * 1000),
            now_ms=now_ms(),
            check_abort=self.allow_abort_jobs,
        )
        self._next_due = found.next_due
        await self._start(found.claims)
        if self.allow_abort_jobs:
            await self._cancel_aborted(found.abort_ids)
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()  # surfaces errors of run_job, as ARQ does
        self._maybe_reconcile()
        await self.heart_beat()

    def _redis_reachable(self) -> None:
        if self._redis_down_since is not None:
            logger.warning("Redis is back after %.1f s", time.monotonic() - self._redis_down_since)
            self._redis_down_since = None

    def _redis_unreachable(self, exc: BaseException) -> None:
        """Log the outage's start; past ARQ_REDIS_OUTAGE_EXIT_AFTER, cancel the running jobs
        (their leases lapse, so they run again) and raise `exc`: the worker exits."""
        now = time.monotonic()
        if self._redis_down_since is None:
            self._redis_down_since = now
            logger.warning("Redis is unreachable (%s); retrying", type(exc).__name__)
        limit = self.settings.redis_outage_exit_after
        if limit is None or now - self._redis_down_since < limit:
            return
        logger.error(
            "Redis has been unreachable for %.0f s (ARQ_REDIS_OUTAGE_EXIT_AFTER=%s): exiting",
            now - self._redis_down_since,
            limit,
        )
        self._leaving = True
        for task in self.tasks.values():
            task.cancel()
        raise exc

    def _free_slots(self) -> int:
        """How many jobs this poll may claim (0 while the worker may not pick jobs)."""
        if not self.allow_pick_jobs:
            return 0
        free = min(self.max_jobs - self.job_counter, self.queue_read_limit)
        if self.burst and self.max_burst_jobs >= 0:
            free = min(free, self.max_burst_jobs - self._jobs_started())
        if free > 0:
            self.leases.start(self.pool)
        return max(free, 0)

    async def _start(self, claimed: list[Claim]) -> None:
        for claim in claimed:
            job_id = claim.job_id
            running = self.tasks.get(job_id)
            if running is not None and not running.done():
                # Its lease lapsed while it runs here (Redis lost it): never start a second copy.
                logger.warning("job %s already runs in this worker; not started twice", job_id)
                continue
            await self.sem.acquire()  # free slots were counted: this does not wait
            self.job_counter += 1
            self.leases.taken(job_id)
            task = self.loop.create_task(self._run_claimed(claim))
            task.add_done_callback(self._job_done(job_id))
            self.tasks[job_id] = task

    async def _cancel_aborted(self, abort_ids: list[str]) -> None:
        """ARQ's `_cancel_aborted_jobs` on the marks the poll read: cancel the running ones."""
        aborted: set[str] = set()
        for job_id in abort_ids:
            task = self.job_tasks.get(job_id)
            if task is not None:
                aborted.add(job_id)
                task.cancel()
        if aborted:
            self.aborting_tasks.update(aborted)
            await self.pool.zrem(keys.abort_jobs_ss, *aborted)

    async def _sleep(self, seconds: float) -> None:
        """Wait up to `seconds` (what is left of the poll delay) for a wake-up."""
        if self._redis_down_since is not None:
            seconds = max(seconds, 1.0)
        elif self._next_due is not None:
            seconds = min(seconds, (self._next_due - now_ms()) / 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds))

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._wake.set()  # a slot is free: look for work now

    async def _listen(self) -> None:
        """Wake the loop whenever the API announces new jobs; reconnect after outages."""
        while True:
            pubsub = self.pool.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.queue.wake_channel)
                async for _ in pubsub.listen():
                    self._wake.set()
            except (RedisError, OSError):
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _maybe_reconcile(self) -> None:
        now = time.monotonic()
        if now < self._next_reconcile or "sessionmaker" not in self.ctx:
            return
        self._next_reconcile = now + self.settings.reconcile_interval
        if self._reconciler is None or self._reconciler.done():
            self._reconciler = asyncio.create_task(self._reconcile())

    async def _reconcile(self) -> None:
        interval_ms = int(self.settings.reconcile_interval * 1000)
        try:
            # One worker at a time; the lock lapses by the next round.
            lock = keys.reconcile_lock(self.queue_name)
            if not await self.pool.set(lock, self.ctx["worker_id"], nx=True, px=interval_ms):
                return
            await reconcile(
                queue=self.queue,
                sessionmaker=self.ctx["sessionmaker"],
                lease_seconds=self.settings.lease,
                keep_result_seconds=self.settings.keep_result,
                events=self.ctx["arq_service"].events,
            )
            # The packages' sweeps (webhooks owed by endings recorded elsewhere or lost to a
            # crash).
            await self.ctx["arq_service"].sweep()
        except (RedisError, OSError, *HISTORY_ERRORS):
            logger.warning("reconciliation failed; it runs again later", exc_info=True)

    # -- schedules -------------------------------------------------------------------------

    async def run_cron(self, n: datetime, delay: float, num_windows: int = 2) -> None:
        """ARQ's timing of the schedules, but each run is queued through the job service: in
        the history, under an id no client can take; a slot held by anything else is logged
        and the schedule runs all the same."""
        service: ArqService | None = self.ctx.get("arq_service")
        if service is None:
            await super().run_cron(n, delay, num_windows)
            return
        await queue_due_runs(
            service, self.cron_jobs, self.ctx.get("schedules", {}), n, delay, num_windows
        )

    def run(self) -> None:
        """ARQ's `run` (how the `arq` CLI runs a worker), on uvloop when it is installed; the
        process is the worker's own (`settle_garbage_collector` once it has started)."""
        use_uvloop(self)
        self._own_process = True
        super().run()

    async def close(self) -> None:
        """ARQ's close, except that it ends the worker's loop (also a `main` awaited directly),
        a job cancelled while ARQ writes its ending does not make the worker exit with an error
        (the ending is written; the history catches up), and Redis being away does not keep
        the shutdown hooks from running."""
        self._closing = True
        self._wake.set()
        self.leases.stop()
        for task in (self._listener, self._reconciler):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._listener = self._reconciler = None
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        outcomes = await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                logger.error("a job ended with an error during shutdown", exc_info=outcome)
        with contextlib.suppress(RedisError, OSError):
            await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.aclose(close_connection_pool=True)
        self._pool = None
        self._queue = None


# The stock `arq` CLI builds `arq.worker.Worker`; make that ours.
arq_worker.Worker = JobWorker  # type: ignore[misc]
