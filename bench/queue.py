"""Queue benchmark: plain arq against this job module, with and without its queue features.

Run it from the repository root: `python -m bench.queue` (`make bench`); `--help` lists the flags.
It prints a table:
`variant | poll delay | jobs/s | RTT median ms | RTT p99 ms | pickup median ms`.

The variants (`--variants`, short names in brackets), all on the same Redis, each with its own
queue:

* plain arq [arq]: `arq.connections.create_pool` + `enqueue_job` of a no-op coroutine, run by
  arq's own `Worker` class with the default (pickle) serializer;
* module, features off [off]: `ArqService.enqueue_job("ping")` with `wake_on_enqueue=False`, run by
  arq's own `Worker` class built from `worker_options(...)`: the module's hooks keep the job
  history in the database, but there are no wake-ups, claims, leases or reconciliation (the
  module as it was before its queue guarantees, on today's enqueue path);
* module API [api]: the same enqueue with wake-ups on, run by the module's `JobWorker` (wake-ups
  on enqueue, atomic claims of free slots in priority order, renewed leases, reconciliation);
* module HTTP [http]: `POST /api/v1/arq/enqueue` and `GET /api/v1/arq/status/{id}` against the app
  from `src.main.create_app`, served by uvicorn in a child process; run by `JobWorker`.

Importing `src.arq.worker` rebinds `arq.worker.Worker` to `JobWorker` (so the `arq` CLI builds
it); the arq variants therefore name arq's class explicitly (`src.arq.worker.ArqWorker`).

For every poll delay (`--poll-delays`) each variant measures:

* throughput: `--jobs` jobs are queued first, then a worker (`max_jobs`: `--max-jobs`) starts;
  jobs/s counts from the end of the worker's start-up to the end of the last job's `after_job_end`
  hook and, for the module, until its history writer (`ctx["history_writer"]`, which batches the
  worker's records) has written every start and ending to the database;
* round trip: `--round-trips` sequential enqueue-then-wait, the client checking for the ending
  every `--client-poll` seconds (plain arq: `Job.result`; module: `get_job_status`; HTTP: the
  status endpoint). Before each round trip the client pauses for a random part of one poll delay,
  so jobs arrive at random points of the worker's poll cycle, as independent clients' jobs do.
  Without that pause (`--no-jitter`) sequential round trips lock onto the cycle and each one waits
  about a whole poll delay. arq's `Worker` sees a new job only at its next poll; `JobWorker` is
  woken at once, the poll delay being only its longest sleep;
* pick-up: for each round trip, once it has ended and off the clock, the job's start time minus
  its enqueue time as the queue recorded them (plain arq: `JobResult.start_time - enqueue_time`
  from `Job.result_info()`; module: `started_at - enqueued_at` from `get_job_status` or the status
  endpoint; both in whole milliseconds, the start being arq's own). The module's `enqueued_at` is
  read before it writes the history row, so its pick-up includes that write.

The worker and the clients run in this process, on one event loop; the HTTP server has its own.

Isolation: the benchmark claims a Redis database of its own (`--redis-url`, db 14 by default),
refuses a non-empty one unless `--flush` is given, and flushes it at the end; with
`--shared-redis` it uses the database as it is and deletes only the keys it made (arq's and the
module's, see `_queue_keys`). It creates a PostgreSQL database `vkp_bench_<random>` on the
`--database-url` server, migrates it and drops it at the end (`--database-url sqlite`: a temporary
SQLite file); with `--use-database URL` it uses that already-migrated database and deletes only
the rows it made.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from arq import worker as arq_worker
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import (
    health_check_key_suffix,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import Job
from arq.worker import func
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench._common import (
    ROOT,
    BenchError,
    Failed,
    Isolation,
    add_isolation_arguments,
    describe_isolation,
    fresh_database,
    note,
    number_in,
    positive_int,
    run_main,
    text_table,
)
from src.arq import history, keys
from src.arq import worker as module_worker
from src.arq.config import ArqSettings
from src.arq.pool import create_redis
from src.arq.schemas import JobStatus, JobStatusResponse
from src.arq.service import ArqService
from src.arq.tasks import registry as app_registry
from src.arq.worker import JobWorker, worker_options
from src.auth.config import AuthSettings
from src.config import Settings
from src.database import create_engine, create_sessionmaker

API_KEY = "bench-key-0001"
API_KEYS_SETTING = f"bench:admin:{API_KEY}"
# Marks the Redis database as taken (the test suite's fixtures skip non-empty databases).
CLAIM_KEY = "vkp:bench-run-claim"
CLAIM_SECONDS = 6 * 3600
# Concurrent producers while queueing the throughput jobs (enqueue time is not in jobs/s).
ENQUEUE_CONCURRENCY = 10
WORKER_START_SECONDS = 30.0
SERVER_START_SECONDS = 30.0
SERVER_ENV = "VKP_BENCH_SERVER"
SERVER_CODE = "from bench.queue import serve_api_from_env; serve_api_from_env()"
CHUNK = 500

VARIANT_KEYS = ("arq", "off", "api", "http")
TABLE_HEADERS = (
    "variant",
    "poll delay",
    "jobs/s",
    "RTT median ms",
    "RTT p99 ms",
    "pickup median ms",
)

# arq's own worker class. Importing `src.arq.worker` rebinds `arq.worker.Worker` to `JobWorker`, so
# `arq.worker.Worker` names one or the other depending on import order: never use it here.
ARQ_WORKER: type[arq_worker.Worker] = module_worker.ArqWorker
if issubclass(ARQ_WORKER, JobWorker):  # pragma: no cover - a broken src.arq.worker
    raise ImportError("src.arq.worker.ArqWorker is not arq's own Worker class")


# -- options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    jobs: int
    round_trips: int
    poll_delays: tuple[float, ...]
    variants: tuple[str, ...]
    max_jobs: int
    client_poll: float
    jitter: bool
    redis_url: str
    flush: bool
    shared_redis: bool
    database_url: str
    use_database: str | None


_seconds = number_in(0, 60, unit="seconds", low_open=True)


def _poll_delays(text: str) -> tuple[float, ...]:
    delays = tuple(_seconds(part.strip()) for part in text.split(",") if part.strip())
    if not delays:
        raise argparse.ArgumentTypeError("give at least one poll delay")
    return delays


def _variants(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(chosen) - set(VARIANT_KEYS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {','.join(VARIANT_KEYS)}, got {text!r}")
    return tuple(key for key in VARIANT_KEYS if key in chosen)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.queue",
        description="Throughput, round-trip and pick-up latency of plain arq and of the job "
        "module (its features off, its Python API, its HTTP API), on one Redis.",
    )
    parser.add_argument("--jobs", type=positive_int, default=2000, help="throughput jobs (2000)")
    parser.add_argument(
        "--round-trips", type=positive_int, default=200, help="sequential round trips (200)"
    )
    parser.add_argument(
        "--poll-delays",
        type=_poll_delays,
        default=(0.5, 0.01),
        metavar="S[,S...]",
        help="worker poll delays in seconds, each measured (0.5,0.01)",
    )
    parser.add_argument(
        "--variants",
        type=_variants,
        default=VARIANT_KEYS,
        metavar="V[,V...]",
        help="which variants to run: arq (plain arq), off (module, features off), api (module "
        f"API), http (module HTTP); default {','.join(VARIANT_KEYS)}",
    )
    parser.add_argument(
        "--max-jobs", type=positive_int, default=100, help="the worker's max_jobs (100)"
    )
    parser.add_argument(
        "--client-poll",
        type=_seconds,
        default=0.001,
        metavar="S",
        help="seconds between a waiting client's checks for the job's ending (0.001)",
    )
    parser.add_argument(
        "--no-jitter",
        dest="jitter",
        action="store_false",
        help="no random pause before each round trip (they then lock onto the poll cycle)",
    )
    add_isolation_arguments(parser)
    args = parser.parse_args(argv)
    return Options(
        jobs=args.jobs,
        round_trips=args.round_trips,
        poll_delays=args.poll_delays,
        variants=args.variants,
        max_jobs=args.max_jobs,
        client_poll=args.client_poll,
        jitter=args.jitter,
        redis_url=args.redis_url,
        flush=args.flush,
        shared_redis=args.shared_redis,
        database_url=args.database_url,
        use_database=args.use_database,
    )


# -- what the benchmark made, for the clean-up ------------------------------------------------


@dataclass
class Created:
    """Job ids and queue names the benchmark made (the keys and rows it must remove)."""

    job_ids: set[str] = field(default_factory=set)
    queues: set[str] = field(default_factory=set)


def _chunks(items: Sequence[str], size: int = CHUNK) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# -- Redis ------------------------------------------------------------------------------------


@asynccontextmanager
async def isolated_redis(options: Isolation, created: Created) -> AsyncIterator[None]:
    """Claim the Redis database (or share it) and leave it as found: flushed, or our keys gone."""
    try:
        client: Redis = Redis.from_url(options.redis_url)
    except ValueError as exc:
        raise BenchError(f"--redis-url: {exc}") from None
    try:
        if not options.shared_redis:
            await _claim(client, options)
        try:
            yield
        finally:
            if options.shared_redis:
                await _delete_created_keys(client, created)
            else:
                await client.flushdb()
    finally:
        await client.aclose()


async def _claim(client: Redis, options: Isolation) -> None:
    size = await client.dbsize()
    if size and not options.flush:
        raise BenchError(
            f"the Redis database {options.redis_url} holds {size} key(s); the benchmark needs a "
            "database of its own: name an empty one (--redis-url redis://HOST:PORT/N), "
            "or pass --flush to empty this one"
        )
    if size:
        note(f"flushing {size} keys from {options.redis_url} (--flush)")
        await client.flushdb()
    if not await client.set(CLAIM_KEY, uuid.uuid4().hex, nx=True, ex=CLAIM_SECONDS):
        raise BenchError(f"another run claimed the Redis database {options.redis_url}")


async def _delete_created_keys(client: Redis, created: Created) -> None:
    prefixes = (job_key_prefix, result_key_prefix, in_progress_key_prefix, retry_key_prefix)
    names = [prefix + job_id for job_id in sorted(created.job_ids) for prefix in prefixes]
    for queue in sorted(created.queues):
        names += _queue_keys(queue)
    for chunk in _chunks(names):
        await client.delete(*chunk)


def _queue_keys(queue: str) -> list[str]:
    """Every key arq and the module keep per queue (see `src.arq.keys`).

    Not keys, so nothing to delete: the wake-up channel (`keys.wake_channel`) and the per-job
    event channels (`keys.job_events`) are pub/sub only. Not made here: rate-limit counters (the
    benchmark's `enqueue_rate_limit` is 0) and abort marks (`keys.abort_jobs_ss`: it never aborts).
    """
    return [
        queue,
        queue + health_check_key_suffix,
        keys.running_set(queue),
        keys.workers_set(queue),
        keys.deferred_set(queue),
        keys.priority_offsets(queue),
        keys.reconcile_lock(queue),
        keys.missing_since(queue),
        keys.fair_clocks(queue),
    ]


# -- the database -----------------------------------------------------------------------------


@asynccontextmanager
async def isolated_database(options: Isolation, created: Created) -> AsyncIterator[str]:
    """A migrated database URL for this run; dropped (or cleared of our rows) at the end."""
    if options.use_database is not None:
        url = _settings(options.redis_url, options.use_database).database_url
        try:
            yield url
        finally:
            await _delete_created_rows(url, created)
    else:
        async with fresh_database(options.database_url) as url:
            yield url


async def _delete_created_rows(url: str, created: Created) -> None:
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine).begin() as session:
            for chunk in _chunks(sorted(created.job_ids)):
                await history.remove(session, chunk)
    finally:
        await engine.dispose()


def _settings(redis_url: str, database_url: str) -> Settings:
    try:
        return Settings(redis_url=redis_url, database_url=database_url)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BenchError(f"invalid URL: {problems}") from None


# -- the variants -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    options: Options
    settings: Settings
    created: Created

    def arq_settings(
        self, queue_name: str, poll_delay: float = 0.5, *, wake_on_enqueue: bool = True
    ) -> ArqSettings:
        """The module's settings; no enqueue rate limit, so it does not throttle the benchmark."""
        return ArqSettings(
            queue_name=queue_name,
            poll_delay=poll_delay,
            max_jobs=self.options.max_jobs,
            enqueue_rate_limit=0,
            burst_mode=False,
            wake_on_enqueue=wake_on_enqueue,
        )


class Variant(Protocol):
    name: str
    # The class the worker is built from: arq's own `Worker` or `JobWorker`.
    worker_class: type[arq_worker.Worker]

    def worker_options(self, poll_delay: float) -> dict[str, Any]:
        """Everything `worker_class` takes but `handle_signals`."""
        ...

    async def enqueue(self) -> str:
        """Queue one job; its id."""
        ...

    async def wait(self, job_id: str) -> None:
        """Return once the job has ended; raise `BenchError` unless it succeeded."""
        ...

    async def pickup_ms(self, job_id: str) -> float:
        """For an ended job: its start time minus its enqueue time, as the queue recorded them."""
        ...


async def noop(ctx: dict[str, Any]) -> None:
    """The plain arq job: does nothing."""


class PlainArq:
    name = "plain arq"
    worker_class = ARQ_WORKER

    def __init__(self, bench: Bench, pool: ArqRedis, queue_name: str) -> None:
        self.bench = bench
        self.pool = pool
        self.queue_name = queue_name

    def worker_options(self, poll_delay: float) -> dict[str, Any]:
        return {
            "functions": [func(noop, name="noop")],
            "redis_settings": RedisSettings.from_dsn(self.bench.settings.redis_url),
            "queue_name": self.queue_name,
            "max_jobs": self.bench.options.max_jobs,
            "poll_delay": poll_delay,
        }

    async def enqueue(self) -> str:
        job = await self.pool.enqueue_job("noop")
        if job is None:
            raise BenchError("arq refused a job: its id is taken")
        return job.job_id

    def _job(self, job_id: str) -> Job:
        return Job(job_id, self.pool, _queue_name=self.queue_name)

    async def wait(self, job_id: str) -> None:
        try:
            await self._job(job_id).result(poll_delay=self.bench.options.client_poll)
        except Exception as exc:
            raise BenchError(f"plain arq job {job_id} failed: {exc!r}") from exc

    async def pickup_ms(self, job_id: str) -> float:
        info = await self._job(job_id).result_info()
        if info is None:
            raise BenchError(f"plain arq job {job_id}: arq holds no result")
        return (info.start_time - info.enqueue_time).total_seconds() * 1000


@asynccontextmanager
async def plain_arq(bench: Bench) -> AsyncIterator[PlainArq]:
    queue = "bench:arq"
    bench.created.queues.add(queue)
    pool = await create_pool(
        RedisSettings.from_dsn(bench.settings.redis_url), default_queue_name=queue
    )
    try:
        yield PlainArq(bench, pool, queue)
    finally:
        await pool.aclose(close_connection_pool=True)


def _ended_well(variant: str, job_id: str, status: str) -> None:
    if status != JobStatus.COMPLETE.value:
        raise BenchError(f"{variant} job {job_id} ended {status}")


def _module_pickup_ms(variant: str, status: JobStatusResponse) -> float:
    if status.started_at is None:
        raise BenchError(f"{variant} job {status.job_id} ended without a start time")
    return (status.started_at - status.enqueued_at).total_seconds() * 1000


class ModuleApi:
    """The module's Python API; with `features` off, run by arq's own worker class."""

    def __init__(self, bench: Bench, service: ArqService, *, features: bool) -> None:
        self.bench = bench
        self.service = service
        self.features = features
        self.name = "module API" if features else "module, features off"
        self.worker_class: type[arq_worker.Worker] = JobWorker if features else ARQ_WORKER

    def worker_options(self, poll_delay: float) -> dict[str, Any]:
        return _module_worker_options(
            self.bench, self.service.settings.queue_name, poll_delay, features=self.features
        )

    async def enqueue(self) -> str:
        return (await self.service.enqueue_job("ping")).job_id

    async def wait(self, job_id: str) -> None:
        while True:
            status = (await self.service.get_job_status(job_id)).status
            if status.finished:
                _ended_well(self.name, job_id, status.value)
                return
            await asyncio.sleep(self.bench.options.client_poll)

    async def pickup_ms(self, job_id: str) -> float:
        return _module_pickup_ms(self.name, await self.service.get_job_status(job_id))


def _module_worker_options(
    bench: Bench, queue_name: str, poll_delay: float, *, features: bool = True
) -> dict[str, Any]:
    return worker_options(
        registry=app_registry,
        settings=bench.settings,
        arq_settings=bench.arq_settings(queue_name, poll_delay, wake_on_enqueue=features),
    )


@asynccontextmanager
async def _module_service(bench: Bench, *, features: bool) -> AsyncIterator[ModuleApi]:
    queue = "bench:api" if features else "bench:off"
    bench.created.queues.add(queue)
    settings = bench.settings
    redis = create_redis(settings.redis_url, queue_name=queue, timeout=settings.redis_timeout)
    engine = create_engine(settings.database_url, timeout=settings.database_timeout)
    service = ArqService(
        redis=redis,
        sessionmaker=create_sessionmaker(engine),
        registry=app_registry,
        settings=bench.arq_settings(queue, wake_on_enqueue=features),
    )
    try:
        yield ModuleApi(bench, service, features=features)
    finally:
        await redis.aclose(close_connection_pool=True)
        await engine.dispose()


def module_off(bench: Bench) -> AbstractAsyncContextManager[ModuleApi]:
    return _module_service(bench, features=False)


def module_api(bench: Bench) -> AbstractAsyncContextManager[ModuleApi]:
    return _module_service(bench, features=True)


class ModuleHttp:
    name = "module HTTP"
    worker_class: type[arq_worker.Worker] = JobWorker

    def __init__(self, bench: Bench, client: httpx.AsyncClient, queue_name: str) -> None:
        self.bench = bench
        self.client = client
        self.queue_name = queue_name

    def worker_options(self, poll_delay: float) -> dict[str, Any]:
        return _module_worker_options(self.bench, self.queue_name, poll_delay)

    async def enqueue(self) -> str:
        response = await self.client.post("/api/v1/arq/enqueue", json={"function_name": "ping"})
        if response.status_code != httpx.codes.ACCEPTED:
            raise BenchError(f"POST /enqueue answered {response.status_code}: {response.text}")
        return str(response.json()["job_id"])

    async def _status(self, job_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/api/v1/arq/status/{job_id}")
        if response.status_code != httpx.codes.OK:
            raise BenchError(f"GET /status answered {response.status_code}: {response.text}")
        body: dict[str, Any] = response.json()
        return body

    async def wait(self, job_id: str) -> None:
        while True:
            status = JobStatus((await self._status(job_id))["status"])
            if status.finished:
                _ended_well(self.name, job_id, status.value)
                return
            await asyncio.sleep(self.bench.options.client_poll)

    async def pickup_ms(self, job_id: str) -> float:
        status = JobStatusResponse.model_validate(await self._status(job_id))
        return _module_pickup_ms(self.name, status)


@asynccontextmanager
async def module_http(bench: Bench) -> AsyncIterator[ModuleHttp]:
    queue = "bench:http"
    bench.created.queues.add(queue)
    async with (
        api_server(bench, queue) as (base_url, process),
        httpx.AsyncClient(
            base_url=base_url,
            headers={"X-API-Key": API_KEY},
            timeout=30,
            trust_env=False,
        ) as client,
    ):
        await _until_healthy(client, process)
        yield ModuleHttp(bench, client, queue)


# -- the HTTP server, in a child process ------------------------------------------------------


@asynccontextmanager
async def api_server(
    bench: Bench, queue_name: str
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """uvicorn serving `create_app(...)` in a child process, on a port picked by the kernel.

    This process binds and listens on 127.0.0.1:0 and hands the socket to the child, so no other
    program can take the port in between.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(256)
        port = listener.getsockname()[1]
        config = {
            "fd": listener.fileno(),
            "settings": bench.settings.model_dump(mode="json"),
            "arq_settings": bench.arq_settings(queue_name).model_dump(mode="json"),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SERVER_CODE,
            cwd=ROOT,
            env={**os.environ, SERVER_ENV: json.dumps(config)},
            stdin=subprocess.DEVNULL,
            pass_fds=(listener.fileno(),),
        )
    finally:
        listener.close()
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(15):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def _until_healthy(client: httpx.AsyncClient, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while True:
        if process.returncode is not None:
            raise BenchError(f"the API server exited with code {process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if (await client.get("/api/v1/arq/health")).status_code == httpx.codes.OK:
                return
        if time.monotonic() > deadline:
            raise BenchError(f"the API server was not healthy within {SERVER_START_SECONDS:g} s")
        await asyncio.sleep(0.1)


def serve_api_from_env() -> None:
    """The child process: serve the app on the inherited socket until told to stop."""
    import uvicorn

    from src.main import create_app

    config = json.loads(os.environ[SERVER_ENV])
    listener = socket.socket(fileno=config["fd"])
    app = create_app(
        settings=Settings(**config["settings"]),
        arq_settings=ArqSettings(**config["arq_settings"]),
        auth_settings=AuthSettings(api_keys=SecretStr(API_KEYS_SETTING)),
        registry=app_registry,
    )
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    )
    parent = os.getppid()

    def stop_when_orphaned() -> None:
        while not server.should_exit:
            if os.getppid() != parent:
                server.should_exit = True
            time.sleep(1)

    threading.Thread(target=stop_when_orphaned, daemon=True).start()
    server.run(sockets=[listener])


# -- the worker -------------------------------------------------------------------------------


class WorkerRun:
    """An in-process ARQ worker that tells when it has started and when `target` jobs ended."""

    def __init__(
        self, worker_class: type[arq_worker.Worker], options: dict[str, Any], *, target: int
    ) -> None:
        self.target = target
        self.ended = 0
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self.ready_at = 0.0
        self.done_at = 0.0
        on_startup: Callable[[dict[str, Any]], Any] | None = options.get("on_startup")
        after_job_end: Callable[[dict[str, Any]], Any] | None = options.get("after_job_end")

        async def started(ctx: dict[str, Any]) -> None:
            if on_startup is not None:
                await on_startup(ctx)
            self.ready_at = time.perf_counter()
            self.ready.set()

        async def ended(ctx: dict[str, Any]) -> None:
            if after_job_end is not None:
                await after_job_end(ctx)
            self.ended += 1
            if self.ended == self.target:
                # The module's hooks hand records to a batching writer: count its writes too.
                writer = ctx.get("history_writer")
                if writer is not None:
                    await writer.flush()
                self.done_at = time.perf_counter()
                self.done.set()

        self.worker = worker_class(
            **{**options, "on_startup": started, "after_job_end": ended}, handle_signals=False
        )
        self.task: asyncio.Task[None] = asyncio.create_task(self.worker.async_run())

    async def until(self, event: asyncio.Event, *, seconds: float, what: str) -> None:
        """Wait for `event`; fail if the worker stops or `seconds` pass first."""
        waiter = asyncio.create_task(event.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, self.task}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        if waiter in done:
            return
        if self.task in done:
            error = None if self.task.cancelled() else self.task.exception()
            raise BenchError(f"the worker stopped during {what}: {error!r}") from error
        raise BenchError(
            f"{what} took over {seconds:g} s ({self.ended} of {self.target} jobs ended)"
        )

    def check(self, expected: int) -> None:
        worker = self.worker
        if worker.jobs_failed or worker.jobs_retried or worker.jobs_complete != expected:
            raise BenchError(
                f"expected {expected} complete jobs, the worker has {worker.jobs_complete} "
                f"complete, {worker.jobs_failed} failed, {worker.jobs_retried} retried"
            )

    async def stop(self) -> None:
        await self.worker.close()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


@asynccontextmanager
async def running_worker(
    worker_class: type[arq_worker.Worker], options: dict[str, Any], *, target: int
) -> AsyncIterator[WorkerRun]:
    run = WorkerRun(worker_class, options, target=target)
    try:
        await run.until(run.ready, seconds=WORKER_START_SECONDS, what="the worker's start-up")
        yield run
    finally:
        await run.stop()


# -- measuring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    variant: str
    poll_delay: float
    jobs_per_second: float
    rtt_median_ms: float
    rtt_p99_ms: float
    pickup_median_ms: float


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default method)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


async def enqueue_many(variant: Variant, count: int, created: Created) -> None:
    """Queue `count` jobs from a few concurrent producers."""
    tickets = iter(range(count))

    async def producer() -> None:
        for _ in tickets:
            created.job_ids.add(await variant.enqueue())

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(ENQUEUE_CONCURRENCY, count)):
                group.create_task(producer())
    except ExceptionGroup as errors:
        raise errors.exceptions[0] from None


async def measure(bench: Bench, variant: Variant, poll_delay: float) -> Row:
    options = bench.options
    label = f"{variant.name}, poll delay {poll_delay:g} s"
    started = time.perf_counter()
    await enqueue_many(variant, options.jobs, bench.created)
    enqueue_seconds = time.perf_counter() - started
    # Poll-bound: each poll starts at most max_jobs jobs; allow plenty on top.
    drain_limit = 120 + 10 * poll_delay * math.ceil(options.jobs / options.max_jobs)
    round_trip_limit = 30 + 10 * poll_delay
    worker_class = variant.worker_class
    async with running_worker(
        worker_class, variant.worker_options(poll_delay), target=options.jobs
    ) as run:
        await run.until(run.done, seconds=drain_limit, what=f"{label}: the throughput jobs")
        run_seconds = run.done_at - run.ready_at
        run.check(options.jobs)
        note(
            f"{label}: {worker_class.__module__}.{worker_class.__qualname__}; "
            f"queued {options.jobs} jobs in {enqueue_seconds:.2f} s "
            f"({options.jobs / enqueue_seconds:.0f}/s), ran them in {run_seconds:.2f} s"
        )
        rtts: list[float] = []
        pickups: list[float] = []
        for _ in range(options.round_trips):
            if options.jitter:
                await asyncio.sleep(random.uniform(0, poll_delay))
            try:
                async with asyncio.timeout(round_trip_limit):
                    begun = time.perf_counter()
                    job_id = await variant.enqueue()
                    bench.created.job_ids.add(job_id)
                    await variant.wait(job_id)
                    rtts.append((time.perf_counter() - begun) * 1000)
            except TimeoutError:
                raise BenchError(
                    f"{label}: a round trip took over {round_trip_limit:g} s"
                ) from None
            pickups.append(await variant.pickup_ms(job_id))
        run.check(options.jobs + options.round_trips)
    row = Row(
        variant=variant.name,
        poll_delay=poll_delay,
        jobs_per_second=options.jobs / run_seconds,
        rtt_median_ms=statistics.median(rtts),
        rtt_p99_ms=percentile(rtts, 0.99),
        pickup_median_ms=statistics.median(pickups),
    )
    note(
        f"{label}: {row.jobs_per_second:.1f} jobs/s, round trip median "
        f"{row.rtt_median_ms:.1f} ms, p99 {row.rtt_p99_ms:.1f} ms, "
        f"pick-up median {row.pickup_median_ms:.1f} ms"
    )
    return row


VARIANTS: dict[str, Callable[[Bench], AbstractAsyncContextManager[Variant]]] = {
    "arq": plain_arq,
    "off": module_off,
    "api": module_api,
    "http": module_http,
}


async def run(options: Options) -> list[Row]:
    """Set up the isolated Redis database and database, measure every variant, clean up."""
    created = Created()
    rows: list[Row] = []
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(isolated_redis(options, created))
        database_url = await stack.enter_async_context(isolated_database(options, created))
        bench = Bench(options, _settings(options.redis_url, database_url), created)
        variants: list[Variant] = [
            await stack.enter_async_context(VARIANTS[key](bench)) for key in options.variants
        ]
        for poll_delay in options.poll_delays:
            for variant in variants:
                rows.append(await measure(bench, variant, poll_delay))
    return rows


# -- output -----------------------------------------------------------------------------------


def format_table(rows: Sequence[Row]) -> str:
    cells = [
        (
            row.variant,
            f"{row.poll_delay:g} s",
            f"{row.jobs_per_second:.1f}",
            f"{row.rtt_median_ms:.1f}",
            f"{row.rtt_p99_ms:.1f}",
            f"{row.pickup_median_ms:.1f}",
        )
        for row in rows
    ]
    return text_table(TABLE_HEADERS, cells, right=range(1, len(TABLE_HEADERS)))


def describe(options: Options) -> str:
    return (
        f"{options.jobs} throughput jobs, {options.round_trips} round trips"
        f"{' (random start in the poll cycle)' if options.jitter else ''}, "
        f"max_jobs={options.max_jobs}, client poll {options.client_poll * 1000:g} ms; "
        f"{describe_isolation(options)}"
    )


async def _run_stoppable(options: Options) -> list[Row]:
    """`run`, cancelled (so cleaning up) by SIGTERM as by Ctrl-C, unless SIGTERM has a handler."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    handle_term = task is not None and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    if handle_term and task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run(options)
    finally:
        if handle_term:
            loop.remove_signal_handler(signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    rows = run_main(describe(options), _run_stoppable(options), RedisError, httpx.HTTPError)
    if isinstance(rows, Failed):
        return rows.exit_code
    print(describe(options))
    print()
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
