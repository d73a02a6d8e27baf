"""The worker's entry point: `arq src.arq.worker.WorkerSettings` (`--watch src` to reload).

`worker_options` is everything a worker takes (the app's tasks and schedules, the hooks that
open the database, the history writer, the heartbeat and the lifecycle events); `WorkerSettings`
is built from it and the app's registry on first use. The worker class is `JobWorker`
(`src.arq.job_worker`); importing either module makes `arq.worker.Worker` name it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any, cast

from arq.connections import RedisSettings
from prometheus_client import start_http_server
from pydantic_settings import BaseSettings
from redis.exceptions import RedisError

from src import logs
from src.arq import keys
from src.arq.config import ArqSettings
from src.arq.context import WorkerContext
from src.arq.job_logs import CONFIGURE_LOGGING
from src.arq.job_worker import ArqWorker, JobWorker
from src.arq.log_masking import MASK, mask_secrets
from src.arq.outcome import ms_to_datetime, now_ms
from src.arq.queue import JobQueue
from src.arq.recording import HistoryWriter
from src.arq.registry import TaskRegistry
from src.arq.serialization import deserialize, serialize
from src.arq.service import WORKER_HEARTBEAT_SECONDS, ArqService
from src.arq.worker_endings import ENDING_WRITE_SECONDS
from src.arq.workers import WORKER_STATE, announce
from src.config import Settings, configure_logging, get_settings, load
from src.database import create_engine, create_sessionmaker

__all__ = [
    "ENDING_WRITE_SECONDS",
    "MASK",
    "ArqWorker",
    "JobWorker",
    "mask_secrets",
    "redis_settings",
    "settings_class",
    "worker_options",
]

logger = logging.getLogger("src.arq.worker")
# How long the history writer lets records gather before it writes them: a short job's start and
# ending then share one transaction, and the writer's work comes after the run's (its ending is
# in Redis, and its waiting client woken, first).
HISTORY_DELAY_SECONDS = 0.005
# Records in one history transaction at most: a worker that drains a backlog (100 no-op jobs at
# a time) keeps up with its jobs with batches of this size; batches of 500 fell behind.
HISTORY_BATCH = 2000


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
    schedule_settings: Sequence[BaseSettings] = (),
) -> dict[str, Any]:
    """Everything the worker takes, for `WorkerSettings` and for tests' in-process workers.

    The schedules read their domains' own settings from the environment, except those given
    in `schedule_settings` (by class)."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        engine = create_engine(
            settings.database_url,
            timeout=settings.database_timeout,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
        )
        ctx["engine"] = engine
        ctx["sessionmaker"] = create_sessionmaker(engine)
        ctx["job_queue"] = JobQueue.for_settings(ctx["redis"], arq_settings)
        # The worker's own handle on the job API: its lifecycle events, schedules and sweeps.
        ctx["arq_service"] = ArqService(
            redis=ctx["redis"],
            sessionmaker=ctx["sessionmaker"],
            registry=registry,
            settings=arq_settings,
        )
        ctx["history_writer"] = HistoryWriter(
            queue=ctx["job_queue"],
            sessionmaker=ctx["sessionmaker"],
            events=ctx["arq_service"].events,
            keep_result_ms=int(arq_settings.keep_result * 1000),
            delay=HISTORY_DELAY_SECONDS,
            max_batch=HISTORY_BATCH,
        )
        ctx["events"] = ctx["arq_service"].events
        ctx["worker_id"] = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        logs.bind({"worker_id": ctx["worker_id"]})  # on the worker's lines from here on
        ctx["heartbeat"] = asyncio.create_task(_heartbeat(ctx))
        if arq_settings.metrics_port is not None:
            serve_metrics(arq_settings.metrics_host, arq_settings.metrics_port)
        for hook in registry.startup_hooks:
            await hook(cast(WorkerContext, ctx))
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]  # uvloop or asyncio
        logger.info(
            "worker %s up, tasks: %s; event loop: %s",
            ctx["worker_id"],
            ", ".join(registry.names()),
            loop,
        )

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        for hook in reversed(registry.shutdown_hooks):
            try:
                await hook(cast(WorkerContext, ctx))
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
            # Gone from the live workers at once (its announced state too), not a few beats on.
            with contextlib.suppress(RedisError, OSError):
                await ctx["redis"].zrem(keys.workers_set(arq_settings.queue_name), ctx["worker_id"])
                await ctx["redis"].delete(
                    keys.worker_state(arq_settings.queue_name, ctx["worker_id"])
                )
        if "engine" in ctx:
            await ctx["engine"].dispose()

    async def _heartbeat(ctx: dict[str, Any]) -> None:
        key = keys.workers_set(arq_settings.queue_name)
        while True:
            try:
                await ctx["redis"].zadd(key, {ctx["worker_id"]: int(time.time() * 1000)})
                # What it runs and its schedules' next runs, for the dashboard's overview.
                state = ctx[WORKER_STATE]() if WORKER_STATE in ctx else {}
                await announce(ctx["redis"], arq_settings.queue_name, ctx["worker_id"], state)
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
        "cron_jobs": registry.cron_jobs(schedule_settings),
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
        "ctx": {
            "arq_settings": arq_settings,
            "schedules": registry.scheduled_runs(schedule_settings),
            # Run by the worker before its first line: LOG_LEVEL and LOG_FORMAT, ARQ's lines too.
            CONFIGURE_LOGGING: functools.partial(
                configure_logging, settings.log_level, settings.log_format
            ),
        },
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "on_job_start": on_job_start,
        "after_job_end": after_job_end,
    }


_metrics_servers: dict[tuple[str, int], object] = {}


def serve_metrics(host: str, port: int) -> None:
    """Serve this process' Prometheus metrics on `host:port` (once per process: every metric of
    the process is there, the job module's and the domains')."""
    if (host, port) in _metrics_servers:
        return
    server, _thread = start_http_server(port, addr=host)
    _metrics_servers[(host, port)] = server
    logger.info("metrics on http://%s:%d/metrics", host, port)


def settings_class(registry: TaskRegistry) -> type:
    """A `WorkerSettings` class for `registry`, with every setting from the environment."""
    options = worker_options(
        registry=registry, settings=get_settings(), arq_settings=load(ArqSettings)
    )
    # `arq` reads the class `__dict__`, so the hooks stay plain functions there.
    return type("WorkerSettings", (), {"__doc__": __doc__, "__module__": __name__, **options})


def __getattr__(name: str) -> Any:
    """`WorkerSettings`, the `arq` CLI's entry point, is built on first use from the app's
    registry (`src.arq.tasks`, the one place that loads the domains): importing this module
    for `JobWorker` or `worker_options` loads no domain package."""
    if name == "WorkerSettings":
        from src.arq.tasks import registry

        value = settings_class(registry)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
