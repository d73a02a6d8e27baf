"""One adapter per library measured by bench/peers.py: its worker command, its client calls
(enqueue, enqueue-then-wait) and how many of its jobs are not done yet.

* the module: `open_arq_service()` (the Python API) as client, the task `ping`, its worker run
  as users run it (`arq src.arq.worker.WorkerSettings`, `ARQ_MAX_JOBS`), history in PostgreSQL.
  A round trip waits with `ArqService.wait_for_result` (woken by the job's channel);
  `--module-wait stream` waits for the job's lifecycle events through `src.arq.streams.StreamHub`
  (what the SSE status stream uses), then reads `get_job_result`; `--module-wait poll` polls
  `get_job_result`;
* saq: `Queue.enqueue`, `Job.refresh(until_complete=...)` (waits through Redis pub/sub; its
  `Queue.apply` polls every 0.5 s), the `saq` worker command;
* taskiq: `RedisStreamBroker` + `RedisAsyncResultBackend`, `kiq()`, `wait_result()` (it polls:
  every `--client-poll` seconds), the `taskiq worker` command;
* arq: `create_pool().enqueue_job`, `Job.result()` (its default poll, 0.5 s), the `arq` worker
  with its defaults (poll 0.5 s, pickle).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import itertools
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench._stack import BIN, BenchError, Stack, child_env, module_env
from bench.chaos import plain_dsn
from bench.peer_workers import NOOP, TASKIQ_QUEUE, build_taskiq

MODULE_TASK = "ping"  # the module's own no-op: returns its message and the worker's name
WAIT_SECONDS = 60.0  # for one job's result in a round trip
FINISHED = ("complete", "failed", "aborted")


@dataclass(frozen=True)
class ClientOptions:
    concurrency: int = 100  # the worker's jobs at once
    batch_size: int = 1000
    batch_in_flight: int = 1
    client_poll: float = 0.002  # taskiq's wait_result, the module's `poll` wait
    module_wait: str = "wait"  # or "stream", "poll"


async def in_lanes(count: int, lanes: int, call: Any) -> None:
    """`count` calls of `call()`, at most `lanes` at a time."""
    counter = itertools.count()

    async def lane() -> None:
        while next(counter) < count:
            await call()

    await asyncio.gather(*(lane() for _ in range(max(1, min(lanes, count)))))


class Library:
    """A library's client and worker, for one pass at a time (`open` ... `close`)."""

    key = ""
    package = ""  # the distribution that must be installed

    def __init__(self, stack: Stack, options: ClientOptions) -> None:
        self.stack = stack
        self.options = options

    @classmethod
    def missing(cls) -> str | None:
        """Why this library cannot run here, or None."""
        module = cls.package.replace("-", "_")
        if importlib.util.find_spec(module) is None:
            return f"{cls.package} is not installed (pip install -e '.[bench]')"
        try:
            importlib.import_module(module)
        except ImportError as exc:  # installed, but not with versions that work together
            return f"{cls.package} does not import ({exc}); pip install -c requirements.lock"
        return None

    @property
    def label(self) -> str:
        return f"{self.package} {importlib.metadata.version(self.package)}"

    def worker_argv(self) -> list[str]:
        raise NotImplementedError

    def worker_env(self) -> dict[str, str]:
        return child_env(
            BENCH_REDIS_URL=self.stack.redis_url, BENCH_CONCURRENCY=str(self.options.concurrency)
        )

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def enqueue_one(self) -> None:
        raise NotImplementedError

    async def enqueue_all(self, count: int, in_flight: int) -> None:
        await in_lanes(count, in_flight, self.enqueue_one)

    async def remaining(self) -> int:
        """Jobs enqueued in this pass that are not done yet."""
        raise NotImplementedError

    async def settled(self) -> bool:
        """Everything the worker owes for its finished jobs is stored (the module: history)."""
        return True

    async def round_trip(self) -> None:
        """Enqueue one job and wait for its result through the client API."""
        raise NotImplementedError


class Module(Library):
    key = "module"
    package = "vk-comments-parser"

    def __init__(self, stack: Stack, options: ClientOptions) -> None:
        super().__init__(stack, options)
        self.accepted = 0  # every job of every pass: the history must hold them all
        self._exits: contextlib.AsyncExitStack | None = None
        self._service: Any = None
        self._hub: Any = None
        self._queue = ""
        self._db: asyncpg.Connection | None = None

    @classmethod
    def missing(cls) -> str | None:
        return None

    @property
    def label(self) -> str:
        return "this module, enqueue_job"

    def worker_argv(self) -> list[str]:
        return [str(BIN / "arq"), "src.arq.worker.WorkerSettings"]

    def worker_env(self) -> dict[str, str]:
        return module_env(
            redis_url=self.stack.redis_url,
            database_url=self.stack.database_url,
            ARQ_MAX_JOBS=str(self.options.concurrency),
        )

    async def open(self) -> None:
        from src.arq.config import ArqSettings
        from src.arq.service import open_arq_service
        from src.arq.streams import StreamHub
        from src.config import Settings

        # The per-owner enqueue limit (600 a minute by default) would refuse the benchmark.
        arq_settings = ArqSettings(_env_file=None, enqueue_rate_limit=0)
        settings = Settings(
            _env_file=None,
            redis_url=self.stack.redis_url,
            database_url=self.stack.database_url,
        )
        self._queue = arq_settings.queue_name
        self._exits = contextlib.AsyncExitStack()
        self._service = await self._exits.enter_async_context(
            open_arq_service(settings=settings, arq_settings=arq_settings)
        )
        if self.options.module_wait == "stream":
            self._hub = await self._exits.enter_async_context(
                StreamHub(self._service, settings=arq_settings)
            )
            for _ in range(200):
                if self._hub.connected:
                    break
                await asyncio.sleep(0.05)
            else:
                raise BenchError("the module's StreamHub did not subscribe within 10 s")
        self._db = await asyncpg.connect(plain_dsn(self.stack.database_url), timeout=10)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None
        if self._exits is not None:
            await self._exits.aclose()
            self._exits = None

    async def enqueue_one(self) -> None:
        await self._service.enqueue_job(MODULE_TASK)
        self.accepted += 1

    async def _enqueue_for_round_trip(self) -> str:
        response = await self._service.enqueue_job(MODULE_TASK)
        self.accepted += 1
        return str(response.job_id)

    async def remaining(self) -> int:
        return int(await self._service.redis.zcard(self._queue))

    async def settled(self) -> bool:
        assert self._db is not None
        unfinished = await self._db.fetchval(
            "SELECT count(*) FROM arq_jobs WHERE status <> ALL($1::text[])", list(FINISHED)
        )
        return int(unfinished) == 0

    async def round_trip(self) -> None:
        job_id = await self._enqueue_for_round_trip()
        async with asyncio.timeout(WAIT_SECONDS):
            if self.options.module_wait == "wait":
                result = await self._service.wait_for_result(job_id)
            elif self._hub is not None:
                stream = await self._hub.open(job_id)
                try:
                    async for _ in stream.updates():
                        pass
                finally:
                    stream.close()
                result = await self._service.get_job_result(job_id)
            else:
                # Status polling is what this wait measures (a result response has `success`).
                result = await self._service.get_job_result(job_id)
                while not hasattr(result, "success"):
                    await asyncio.sleep(self.options.client_poll)
                    result = await self._service.get_job_result(job_id)
        if getattr(result, "success", None) is not True:
            raise BenchError(f"module job {job_id} did not complete: {result!r}")

    async def history(self) -> tuple[int, int]:
        """(rows complete, rows) of the module's task in the history."""
        conn = await asyncpg.connect(plain_dsn(self.stack.database_url), timeout=10)
        try:
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE status = 'complete') AS complete, count(*) AS rows"
                " FROM arq_jobs WHERE function = $1",
                MODULE_TASK,
            )
        finally:
            await conn.close()
        assert row is not None
        return int(row["complete"]), int(row["rows"])


class ModuleBatch(Module):
    key = "module-batch"

    @property
    def label(self) -> str:
        size = f"{self.options.batch_size:,}".replace(",", " ")
        return f"this module, enqueue_batch of {size}"

    async def _batch(self, size: int) -> list[str]:
        from src.arq.schemas import EnqueueRequest
        from src.arq.service import SYSTEM

        requests = [EnqueueRequest(function_name=MODULE_TASK) for _ in range(size)]
        responses = await self._service.enqueue_batch(requests, principal=SYSTEM)
        self.accepted += len(responses)
        return [str(response.job_id) for response in responses]

    async def enqueue_all(self, count: int, in_flight: int) -> None:
        size = self.options.batch_size
        sizes = [min(size, count - start) for start in range(0, count, size)]
        batches = iter(sizes)

        async def one_batch() -> None:
            await self._batch(next(batches))

        await in_lanes(len(sizes), self.options.batch_in_flight, one_batch)

    async def _enqueue_for_round_trip(self) -> str:
        return (await self._batch(1))[0]


class Saq(Library):
    key = "saq"
    package = "saq"

    def worker_argv(self) -> list[str]:
        return [str(BIN / "saq"), "bench.peer_workers.saq_settings"]

    async def open(self) -> None:
        from saq import Queue

        self.queue = Queue.from_url(self.stack.redis_url)
        await self.queue.connect()
        # saq shares one pub/sub subscription among its waiters and drops it when the last one
        # leaves: a listener for the whole pass keeps it up, as a busy client's would be (the
        # module's StreamHub is one subscription for the process too).
        self._listener = asyncio.create_task(
            self.queue.listen(["bench-keep-subscribed"], lambda *_: False, timeout=None)
        )

    async def close(self) -> None:
        self._listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._listener
        await self.queue.disconnect()

    async def enqueue_one(self) -> None:
        await self.queue.enqueue(NOOP)

    async def remaining(self) -> int:
        return int(await self.queue.count("incomplete"))

    async def round_trip(self) -> None:
        from saq.job import TERMINAL_STATUSES

        job = await self.queue.enqueue(NOOP)
        assert job is not None
        async with asyncio.timeout(WAIT_SECONDS):
            while job.status not in TERMINAL_STATUSES:
                # Listens on saq's pub/sub; a notification missed while (re)subscribing costs
                # one second here.
                with contextlib.suppress(TimeoutError):
                    await job.refresh(until_complete=1.0)
        if job.status != "complete":
            raise BenchError(f"saq job {job.key} ended {job.status}: {job.error}")


class Taskiq(Library):
    key = "taskiq"
    package = "taskiq-redis"

    @property
    def label(self) -> str:
        return f"taskiq {importlib.metadata.version('taskiq')} (redis stream)"

    def worker_argv(self) -> list[str]:
        return [
            str(BIN / "taskiq"),
            "worker",
            "bench.peer_workers:taskiq_broker",
            "--workers=1",
            f"--max-async-tasks={self.options.concurrency}",
        ]

    async def open(self) -> None:
        self.broker, self.task = build_taskiq(self.stack.redis_url)
        await self.broker.startup()  # creates the consumer group: jobs queued from now are read
        self.redis = self.broker.connection_pool

    async def close(self) -> None:
        await self.broker.shutdown()

    async def enqueue_one(self) -> None:
        await self.task.kiq()

    async def remaining(self) -> int:
        from redis.asyncio import Redis

        async with Redis(connection_pool=self.redis) as client:
            length = int(await client.xlen(TASKIQ_QUEUE))
            groups = await client.xinfo_groups(TASKIQ_QUEUE)
        if not groups:
            return length
        group = groups[0]
        # Acknowledged after the result is saved (taskiq's default: when_saved).
        return length - int(group.get("entries-read") or 0) + int(group["pending"])

    async def round_trip(self) -> None:
        task = await self.task.kiq()
        result = await task.wait_result(
            check_interval=self.options.client_poll, timeout=WAIT_SECONDS
        )
        if result.is_err:
            raise BenchError(f"taskiq job failed: {result.error!r}")


class Arq(Library):
    key = "arq"
    package = "arq"

    @property
    def label(self) -> str:
        return f"arq {importlib.metadata.version('arq')} (poll 0.5 s)"

    def worker_argv(self) -> list[str]:
        return [str(BIN / "arq"), "bench.peer_workers.ArqWorkerSettings"]

    async def open(self) -> None:
        from arq.connections import RedisSettings, create_pool

        self.pool = await create_pool(RedisSettings.from_dsn(self.stack.redis_url))

    async def close(self) -> None:
        await self.pool.aclose()

    async def enqueue_one(self) -> None:
        await self.pool.enqueue_job(NOOP)

    async def remaining(self) -> int:
        from arq.constants import default_queue_name

        return int(await self.pool.zcard(default_queue_name))

    async def round_trip(self) -> None:
        job = await self.pool.enqueue_job(NOOP)
        assert job is not None
        await job.result(timeout=WAIT_SECONDS)


LIBRARIES: dict[str, type[Library]] = {
    kind.key: kind for kind in (Module, ModuleBatch, Saq, Taskiq, Arq)
}
PEERS = ("saq", "taskiq", "arq")
