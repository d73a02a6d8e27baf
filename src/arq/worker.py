"""The worker: `arq src.arq.worker.WorkerSettings` (add `--watch src` to reload on change).

`JobWorker` is ARQ's `Worker` with what ARQ lacks, without forking it:
- it claims only as many jobs as it has free slots, atomically and in score order, so priorities
  are strict and a job read from the queue never waits behind a busy slot;
- it sleeps until a job is queued (a Redis pub/sub wake-up), a slot frees, a deferred job falls
  due or `ARQ_POLL_DELAY` passes, whichever comes first;
- running jobs hold a short lease (`ARQ_LEASE`) that the worker renews, so a killed worker's
  jobs run again within one lease instead of after the longest timeout + 10 s;
- a Redis outage does not kill it: it waits and carries on;
- it reconciles the job history with Redis (see `src.arq.reconcile`) at start and every
  `ARQ_RECONCILE_INTERVAL`, one worker at a time.

Importing this module makes `arq.worker.Worker` name `JobWorker`, so the stock `arq` CLI (plain
and `--watch`) builds it from `WorkerSettings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import re
import signal
import socket
import time
import uuid
from typing import Any

import arq.worker as arq_worker
from arq.connections import RedisSettings
from redis.exceptions import RedisError

from src.arq import keys
from src.arq.config import ArqSettings
from src.arq.outcome import ms_to_datetime, now_ms
from src.arq.queue import JobQueue
from src.arq.reconcile import reconcile
from src.arq.recording import HISTORY_ERRORS, HistoryWriter
from src.arq.registry import TaskRegistry
from src.arq.serialization import deserialize, serialize
from src.arq.service import WORKER_HEARTBEAT_SECONDS, ArqService
from src.arq.tasks import registry as default_registry
from src.config import Settings, get_settings, load
from src.database import create_engine, create_sessionmaker

logger = logging.getLogger("src.arq.worker")

# ARQ's own worker class, kept before `arq.worker.Worker` is rebound to `JobWorker` below.
_ArqWorker = arq_worker.Worker
ArqWorker = _ArqWorker


_SECRET_ARG = re.compile(r"(\b\w*(?:secret|token|password)\w*=)'[^']*'?", re.IGNORECASE)


class _NoPriorityDelayLog(logging.Filter):
    """ARQ logs `delayed=` from the score, which for priority jobs includes their offset; and it
    logs a job's arguments, whose secrets (a webhook's `secret=`) must not reach the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 4:
            extra = str(args[3]).split(" delayed=")[0]
            record.args = (args[0], args[1], _SECRET_ARG.sub(r"\1'***'", str(args[2])), extra)
        return True


logging.getLogger("arq.worker").addFilter(_NoPriorityDelayLog())


class JobWorker(_ArqWorker):
    """ARQ's worker with strict priorities, wake-ups, leases, outage tolerance, reconciliation."""

    __signature__ = inspect.signature(_ArqWorker)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ctx = dict(self.ctx)  # a WorkerSettings dict must not be shared between workers
        settings: ArqSettings = self.ctx.get("arq_settings") or ArqSettings()
        self.settings = settings
        # ARQ's loop no longer sleeps; each iteration waits for a wake-up or the poll delay.
        self.poll_interval = self.poll_delay_s
        self.poll_delay_s = 0
        self.in_progress_timeout_s = settings.lease
        self._wake = asyncio.Event()
        self._queue: JobQueue | None = None
        self._listener: asyncio.Task[None] | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._next_renewal = 0.0
        self._next_reconcile = 0.0
        self._redis_down_since: float | None = None

    @property
    def queue(self) -> JobQueue:
        if self._queue is None:
            self._queue = JobQueue(
                self.pool, queue_name=self.queue_name, aging_seconds=self.settings.priority_aging
            )
        return self._queue

    # -- the loop --------------------------------------------------------------------------

    async def _poll_iteration(self) -> None:
        self._wake.clear()
        next_due: int | None = None
        try:
            if self.settings.wake_on_enqueue and self._listener is None:
                self._listener = asyncio.create_task(self._listen())
            now = now_ms()
            next_due = await self.queue.promote(now)
            await self._claim_and_start(now)
            if self.allow_abort_jobs:
                await self._cancel_aborted_jobs()
            for job_id, task in list(self.tasks.items()):
                if task.done():
                    del self.tasks[job_id]
                    task.result()  # surfaces errors of run_job, as ARQ does
            await self._renew_leases()
            self._maybe_reconcile()
            await self.heart_beat()
            if self._redis_down_since is not None:
                logger.warning(
                    "Redis is back after %.1f s", time.monotonic() - self._redis_down_since
                )
                self._redis_down_since = None
        except (RedisError, OSError) as exc:
            if self._redis_down_since is None:
                self._redis_down_since = time.monotonic()
                logger.warning("Redis is unreachable (%s); retrying", type(exc).__name__)
        await self._sleep(next_due)

    async def _claim_and_start(self, now: int) -> None:
        if not self.allow_pick_jobs:
            return
        free = self.max_jobs - self.job_counter
        if self.burst and self.max_burst_jobs >= 0:
            free = min(free, self.max_burst_jobs - self._jobs_started())
        if free <= 0:
            return
        claimed = await self.queue.claim(free, lease_ms=int(self.settings.lease * 1000), now_ms=now)
        for job_id, score in claimed:
            await self.sem.acquire()  # free slots were counted: this does not wait
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, score))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def _sleep(self, next_due: int | None) -> None:
        timeout = self.poll_interval
        if self._redis_down_since is not None:
            timeout = max(timeout, 1.0)
        elif next_due is not None:
            timeout = min(timeout, max(0.0, (next_due - now_ms()) / 1000))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

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

    async def _renew_leases(self) -> None:
        now = time.monotonic()
        if now < self._next_renewal:
            return
        self._next_renewal = now + self.settings.lease / 3
        await self.queue.renew(list(self.tasks), lease_ms=int(self.settings.lease * 1000))

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
            )
            # Webhooks owed by endings recorded elsewhere or lost to a crash.
            await self.ctx["arq_service"].dispatch_notifications()
        except (RedisError, OSError, *HISTORY_ERRORS):
            logger.warning("reconciliation failed; it runs again later", exc_info=True)

    # -- endings ARQ writes without calling the job hooks ----------------------------------

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """Aborted before start, out of tries, expired: record these endings too."""
        await super().finish_failed_job(job_id, result_data)
        writer: HistoryWriter | None = self.ctx.get("history_writer")
        if writer is not None:
            writer.ended(job_id, None)

    async def close(self) -> None:
        """ARQ's close, except that a job cancelled while ARQ writes its ending does not make
        the worker exit with an error (the ending is written; the history catches up)."""
        for task in (self._listener, self._reconciler):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        outcomes = await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                logger.error("a job ended with an error during shutdown", exc_info=outcome)
        await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.aclose(close_connection_pool=True)
        self._pool = None


# The stock `arq` CLI builds `arq.worker.Worker`; make that ours.
arq_worker.Worker = JobWorker  # type: ignore[misc]


def redis_settings(url: str, *, timeout: float) -> RedisSettings:
    """ARQ's connection settings from a URL, with timeouts so a dead Redis is noticed."""
    base = RedisSettings.from_dsn(url)
    base.conn_timeout = max(1, round(timeout))
    base.conn_retries = 5
    base.conn_retry_delay = 1
    return base


def worker_options(
    *,
    registry: TaskRegistry,
    settings: Settings,
    arq_settings: ArqSettings,
) -> dict[str, Any]:
    """Everything the worker takes, for `WorkerSettings` and for tests' in-process workers."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        engine = create_engine(settings.database_url, timeout=settings.database_timeout)
        ctx["engine"] = engine
        ctx["sessionmaker"] = create_sessionmaker(engine)
        ctx["job_queue"] = JobQueue(
            ctx["redis"],
            queue_name=arq_settings.queue_name,
            aging_seconds=arq_settings.priority_aging,
        )
        # The worker's own handle on the job API: it queues the completion webhooks.
        ctx["arq_service"] = ArqService(
            redis=ctx["redis"],
            sessionmaker=ctx["sessionmaker"],
            registry=registry,
            settings=arq_settings,
        )
        ctx["history_writer"] = HistoryWriter(
            queue=ctx["job_queue"],
            sessionmaker=ctx["sessionmaker"],
            notify=ctx["arq_service"].dispatch_notifications,
        )
        ctx["worker_id"] = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        ctx["heartbeat"] = asyncio.create_task(_heartbeat(ctx))
        for hook in registry.startup_hooks:
            await hook(ctx)
        logger.info("worker %s up, tasks: %s", ctx["worker_id"], ", ".join(registry.names()))

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        for hook in reversed(registry.shutdown_hooks):
            try:
                await hook(ctx)
            except Exception:  # one domain's failure must not keep the others open
                logger.exception("a worker shutdown hook failed")
        heartbeat: asyncio.Task[None] | None = ctx.get("heartbeat")
        if heartbeat is not None:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        writer: HistoryWriter | None = ctx.get("history_writer")
        if writer is not None:
            await writer.close()
        if "worker_id" in ctx:
            with contextlib.suppress(RedisError, OSError):
                await ctx["redis"].zrem(keys.workers_set(arq_settings.queue_name), ctx["worker_id"])
        if "engine" in ctx:
            await ctx["engine"].dispose()

    async def _heartbeat(ctx: dict[str, Any]) -> None:
        key = keys.workers_set(arq_settings.queue_name)
        while True:
            try:
                await ctx["redis"].zadd(key, {ctx["worker_id"]: int(time.time() * 1000)})
            except (RedisError, OSError):
                logger.debug("worker heartbeat failed", exc_info=True)
            await asyncio.sleep(WORKER_HEARTBEAT_SECONDS)

    # The job hooks only hand records to the writer: no await in them, so a shutdown's
    # cancellation can never land inside a hook (ARQ calls on_job_start outside its own error
    # handling, where it would strand the job).
    async def on_job_start(ctx: dict[str, Any]) -> None:
        ctx["history_writer"].started(ctx["job_id"], ctx["job_try"], ms_to_datetime(now_ms()))

    async def after_job_end(ctx: dict[str, Any]) -> None:
        ctx["history_writer"].ended(ctx["job_id"], ctx["job_try"])

    return {
        "functions": registry.functions(),
        "cron_jobs": registry.cron_jobs(arq_settings),
        "redis_settings": redis_settings(settings.redis_url, timeout=settings.redis_timeout),
        "queue_name": arq_settings.queue_name,
        "max_jobs": arq_settings.max_jobs,
        "job_timeout": arq_settings.job_timeout,
        "max_tries": arq_settings.max_tries,
        "poll_delay": arq_settings.poll_delay,
        "keep_result": arq_settings.keep_result,
        "burst": arq_settings.burst_mode,
        "health_check_interval": arq_settings.health_check_interval,
        "allow_abort_jobs": True,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "ctx": {"arq_settings": arq_settings},
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "on_job_start": on_job_start,
        "after_job_end": after_job_end,
    }


def _settings_class() -> type:
    options = worker_options(
        registry=default_registry, settings=get_settings(), arq_settings=load(ArqSettings)
    )
    # `arq` reads the class `__dict__`, so the hooks stay plain functions there.
    return type("WorkerSettings", (), {"__doc__": __doc__, "__module__": __name__, **options})


WorkerSettings = _settings_class()
