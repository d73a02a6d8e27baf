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
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import arq.worker as arq_worker
import redis as sync_redis
from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.utils import args_to_string as arq_args_to_string
from arq.utils import to_unix_ms
from redis.exceptions import RedisError

from src.arq import keys
from src.arq.config import ArqSettings
from src.arq.outcome import ms_to_datetime, now_ms
from src.arq.queue import RENEW_SCRIPT, JobQueue
from src.arq.reconcile import reconcile
from src.arq.recording import HISTORY_ERRORS, HistoryWriter
from src.arq.registry import TaskRegistry
from src.arq.serialization import deserialize, serialize
from src.arq.service import WORKER_HEARTBEAT_SECONDS, ArqService
from src.arq.tasks import registry as default_registry
from src.config import Settings, get_settings, load
from src.database import create_engine, create_sessionmaker

logger = logging.getLogger("src.arq.worker")

# How long a worker keeps trying to store a job's ending while Redis is unreachable.
ENDING_WRITE_SECONDS = 300.0

# ARQ's own worker class, kept before `arq.worker.Worker` is rebound to `JobWorker` below.
_ArqWorker = arq_worker.Worker
ArqWorker = _ArqWorker


_SECRET_NAME = re.compile(r"secret|token|password|api_?key|authorization", re.IGNORECASE)
MASK = "***"


def mask_secrets(value: Any) -> Any:
    """`value` with every value under a secret-looking key replaced, at any depth."""
    if isinstance(value, Mapping):
        return {
            key: MASK if isinstance(key, str) and _SECRET_NAME.search(key) else mask_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(item) for item in value]
    return value


def _masked_args_to_string(args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """ARQ's argument text for its log lines, secrets masked by structure (not by a pattern
    over the text, which a secret containing a quote escapes)."""
    return arq_args_to_string(mask_secrets(list(args)), mask_secrets(kwargs))


# ARQ's worker builds its "→ job(args)" log line with this module-level function.
arq_worker.args_to_string = _masked_args_to_string


class _NoPriorityDelayLog(logging.Filter):
    """ARQ logs `delayed=` from the score, which for priority jobs includes their offset."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 4:
            extra = str(args[3]).split(" delayed=")[0]
            record.args = (args[0], args[1], args[2], extra)
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
        self._next_reconcile = 0.0
        self._redis_down_since: float | None = None
        # Leases are renewed from a thread of their own, so a job that holds the event loop
        # (CPU work, a blocking call) cannot let its lease lapse and be started a second time.
        self._leased: set[str] = set()
        self._leased_lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._renewer_stop = threading.Event()

    @property
    def queue(self) -> JobQueue:
        if self._queue is None:
            self._queue = JobQueue.for_settings(self.pool, self.settings)
        return self._queue

    # -- leases ----------------------------------------------------------------------------

    def _start_renewer(self) -> None:
        if self._renewer is None or not self._renewer.is_alive():
            self._renewer_stop.clear()
            self._renewer = threading.Thread(
                target=self._renew_forever, name="arq-lease-renewer", daemon=True
            )
            self._renewer.start()

    def _stop_renewer(self) -> None:
        self._renewer_stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None

    def _renew_forever(self) -> None:
        """Every third of a lease, extend the leases of the jobs this worker runs."""
        # A connection of its own, to the server the worker's pool talks to.
        pool = self.pool.connection_pool
        given = pool.connection_kwargs
        options: dict[str, Any] = {
            name: given[name]
            for name in ("host", "port", "db", "username", "password")
            if name in given
        }
        if "path" in given:
            options["unix_socket_path"] = given["path"]
        client = sync_redis.Redis(
            **options,
            ssl="SSL" in pool.connection_class.__name__,
            socket_timeout=max(1.0, self.settings.lease / 6),
            socket_connect_timeout=max(1.0, self.settings.lease / 6),
        )
        script = client.register_script(RENEW_SCRIPT)
        lease_ms = int(self.settings.lease * 1000)
        prefixes = [keys.result_key_prefix, keys.in_progress_key_prefix]
        try:
            while not self._renewer_stop.wait(self.settings.lease / 3):
                with self._leased_lock:
                    job_ids = list(self._leased)
                if not job_ids:
                    continue
                try:
                    script(args=[lease_ms, *prefixes, *job_ids])
                except (RedisError, OSError):
                    logger.warning("could not renew the leases of %d job(s)", len(job_ids))
        finally:
            client.close()

    def _lease_taken(self, job_id: str) -> None:
        with self._leased_lock:
            self._leased.add(job_id)

    def _lease_given_back(self, job_id: str) -> None:
        with self._leased_lock:
            self._leased.discard(job_id)

    def _job_done(self, job_id: str) -> Any:
        def done(_: asyncio.Task[None]) -> None:
            self._lease_given_back(job_id)
            self._release_sem_dec_counter_on_complete()

        return done

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
        self._start_renewer()
        claimed = await self.queue.claim(free, lease_ms=int(self.settings.lease * 1000), now_ms=now)
        for job_id, score in claimed:
            running = self.tasks.get(job_id)
            if running is not None and not running.done():
                # Its lease lapsed while it runs here (Redis lost it): never start a second copy.
                logger.warning("job %s already runs in this worker; not started twice", job_id)
                continue
            await self.sem.acquire()  # free slots were counted: this does not wait
            self.job_counter += 1
            self._lease_taken(job_id)
            task = self.loop.create_task(self.run_job(job_id, score))
            task.add_done_callback(self._job_done(job_id))
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
            )
            # Webhooks owed by endings recorded elsewhere or lost to a crash.
            await self.ctx["arq_service"].dispatch_notifications()
        except (RedisError, OSError, *HISTORY_ERRORS):
            logger.warning("reconciliation failed; it runs again later", exc_info=True)

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
        if not finish and keep_in_progress is None:
            # Going back to the queue: no renewal behind ARQ's back, nor a bare id re-queued.
            self._lease_given_back(job_id)
            await self._write_ending(
                job_id, lambda: self.queue.back_in_line(job_id, incr_score=incr_score)
            )
            return
        writer: HistoryWriter | None = self.ctx.get("history_writer")
        if finish and result_data and writer is not None:
            writer.remember(job_id, result_data)
        await self._write_ending(
            job_id,
            lambda: super(JobWorker, self).finish_job(
                job_id,
                finish,
                result_data,
                result_timeout_s,
                keep_result_forever or bool(result_data),
                incr_score,
                keep_in_progress,
            ),
        )
        self._lease_given_back(job_id)

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """Aborted before start, out of tries, expired: kept until recorded, and recorded."""
        writer: HistoryWriter | None = self.ctx.get("history_writer")
        if result_data is not None and writer is not None:
            writer.remember(job_id, result_data)

        async def write() -> None:
            # ARQ's own version, without an expiry on the result (nor its PX 0, arq #531).
            async with self.pool.pipeline(transaction=True) as tr:
                tr.delete(
                    keys.retry_key_prefix + job_id,
                    keys.in_progress_key_prefix + job_id,
                    keys.job_key_prefix + job_id,
                )
                tr.zrem(keys.abort_jobs_ss, job_id)
                tr.zrem(self.queue_name, job_id)
                if result_data is not None:
                    tr.set(keys.result_key_prefix + job_id, result_data)
                await tr.execute()

        await self._write_ending(job_id, write)
        self._lease_given_back(job_id)
        if writer is not None:
            writer.ended(job_id, None)

    async def _write_ending(self, job_id: str, write: Callable[[], Awaitable[None]]) -> None:
        """`write` a job's ending to Redis, trying again while Redis is unreachable (up to
        ENDING_WRITE_SECONDS): a lost ending would let the job run again."""
        deadline = time.monotonic() + ENDING_WRITE_SECONDS
        delay = 0.1
        while True:
            try:
                await write()
                return
            except (RedisError, OSError) as exc:
                if time.monotonic() >= deadline:
                    raise
                if delay == 0.1:
                    logger.warning(
                        "could not store the ending of job %s in Redis (%s); trying again",
                        job_id,
                        type(exc).__name__,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- schedules -------------------------------------------------------------------------

    async def run_cron(self, n: datetime, delay: float, num_windows: int = 2) -> None:
        """ARQ's timing of the schedules, but each run is queued through the job service: in
        the history, under an id no client can take; a slot held by anything else is logged
        and the schedule runs all the same."""
        service: ArqService | None = self.ctx.get("arq_service")
        if service is None:
            await super().run_cron(n, delay, num_windows)
            return
        schedules: dict[str, tuple[str, dict[str, Any]]] = self.ctx.get("schedules", {})
        cutoff = n.timestamp() + delay * num_windows
        due: list[tuple[CronJob, datetime]] = []
        for cron_job in self.cron_jobs:
            if cron_job.next_run is None:
                if cron_job.run_at_startup:
                    cron_job.next_run = n
                else:
                    cron_job.calculate_next(n)
                    continue
            if cron_job.next_run.timestamp() < cutoff:
                due.append((cron_job, cron_job.next_run))
                cron_job.calculate_next(cron_job.next_run)
        for cron_job, run_at in due:
            task, kwargs = schedules.get(cron_job.name, (cron_job.name.removeprefix("cron:"), {}))
            try:
                await service.enqueue_scheduled(
                    task, kwargs, slot=f"cron:{task}:{to_unix_ms(run_at)}", run_at=run_at
                )
            except Exception:  # one schedule's trouble must not stop the others
                logger.exception("could not queue the scheduled run of %s", task)

    async def close(self) -> None:
        """ARQ's close, except that a job cancelled while ARQ writes its ending does not make
        the worker exit with an error (the ending is written; the history catches up)."""
        self._stop_renewer()
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
        ctx["job_queue"] = JobQueue.for_settings(ctx["redis"], arq_settings)
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
            keep_result_ms=int(arq_settings.keep_result * 1000),
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
        "ctx": {"arq_settings": arq_settings, "schedules": registry.scheduled_runs(arq_settings)},
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
