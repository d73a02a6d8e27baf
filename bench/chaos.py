"""Chaos: the job guarantees under killed workers, an emptied Redis and dropped connections.

Run it from the repository root: `python -m bench.chaos` (`make chaos`); `--help` lists the flags.

It starts, all of its own: a redis-server process on a free local port (no persistence), a
PostgreSQL database `vkp_chaos_<random>` on the `--database-url` server (migrated with alembic,
dropped at the end), a local HTTP receiver that logs every completion webhook, and `--workers`
worker processes started as operators start them (`arq tests.worker_settings.WorkerSettings`,
configured through the environment: a short lease and reconciliation interval, so that recovery
is quick, and `NOTIFY_ALLOW_HOSTS=127.0.0.1/32` so that webhooks may reach the receiver).

For `--seconds` it then enqueues `--jobs` mixed jobs through the Python API (`ArqService` with
a user principal, in batches spread over the first three quarters of that time): no-ops (`add`),
short sleeps, failures, retries (`flaky`) and, for most of them, `traced` jobs that log the
start and end of every run (job id, try, pid, time) and sleep, fail or ask for retries as told;
a share of the jobs asks for a completion webhook. Meanwhile it SIGKILLs a random worker every
`--kill-every` seconds and starts a new one, kills the Redis server once and starts an empty one
on the same port, and terminates every connection to the database once. Then it waits (at most
`--drain-timeout` seconds) for the queue to drain: every job and every webhook job finished on
record and Redis' queue empty; lets the workers run `--settle` seconds more, stops them, and
checks:

* every accepted job ended as its task dictates (`add`, `sleep` and succeeding `traced`/`flaky`
  jobs complete with the right result, failing ones failed with their error, jobs asking for more
  retries than their tries allow failed with `GaveUp`); a job may instead have run out of tries
  (`MaxTriesExceeded`) only when runs of it were cut short (by a kill, say): counted, not a fault;
* no `traced` job ran concurrently with itself (a run cut short by a kill ends when its worker
  died); none started again after a run that ended it (a result, an error, a retry asked for on
  its last try), unless that run's worker was killed within a second of its end (it may have
  died before storing the ending: at-least-once); none started after its ending on record;
* every job that asked for a webhook got exactly one delivery, with its recorded status; a
  second delivery of one ending counts as a fault unless a worker was killed within a second
  after the first (the webhook job ran again: at-least-once delivery);
* the queue drained before the deadline.

It prints a table (jobs, kills, Redis restarts, dropped connections, re-runs: runs beyond the
planned ones, webhooks, time to drain) and the faults found; the exit code is 1 if there were any.
With `--keep` (or when faults were found) its directory stays, for a post-mortem: `runs.log`
(the traced runs), `webhooks.log` (deliveries), `chaos.log` (kills, Redis restart; epoch
seconds) and `worker-<n>.log` (each worker's output). `--seed` repeats a run's mix of jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench._common import created_database
from src.arq import keys
from src.arq.config import ArqSettings
from src.arq.exceptions import JobConflict
from src.arq.schemas import EnqueueRequest
from src.arq.service import ArqService, open_arq_service, owner_job_id
from src.auth.schemas import Principal, Role
from src.config import Environment, Settings
from src.exceptions import AppError
from tests.servers import serve_app
from tests.tasks import registry as test_registry

ROOT = Path(__file__).resolve().parent.parent
ARQ = str(Path(sys.executable).with_name("arq"))
DEFAULT_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
OWNER = Principal(owner="chaos", role=Role.USER)
QUEUE = ArqSettings(_env_file=None).queue_name
RETRYING_MAX_TRIES = 4  # `flaky` and `traced` (their `max_tries`)
FINISHED = ("complete", "failed", "aborted")
# A worker killed this soon after a run's end (or a webhook's delivery) may have died before
# storing the ending: a run again is then at-least-once, not a fault. The same holds when Redis
# lost its data (restarted empty) after the end and the worker died this soon after that: the
# ending was then only in the worker's memory, on its way to the history, when the worker died.
DEATH_MARGIN = 1.0
ENQUEUE_ATTEMPTS = 40  # per batch, 0.5 s apart: outlasts a Redis restart or a dropped database


@dataclass(frozen=True)
class Options:
    jobs: int = 5000
    workers: int = 3
    kill_every: float = 5.0
    seconds: float = 60.0
    drain_timeout: float = 300.0
    settle: float = 5.0
    notify_share: float = 0.1
    lease: float = 2.0
    max_jobs: int = 20
    redis_restart: bool = True
    db_drop: bool = True
    seed: int | None = None
    database_url: str = DEFAULT_DATABASE_URL
    redis_server: str = "redis-server"
    work_dir: Path | None = None  # kept; None: a temporary directory, removed unless `keep`
    keep: bool = False
    quiet: bool = False


@dataclass
class Report:
    seed: int = 0
    jobs: int = 0
    accepted: int = 0
    kills: int = 0
    redis_restarts: int = 0
    db_drops: int = 0
    connections_dropped: int = 0
    traced_runs: int = 0
    reruns: int = 0
    interrupted_runs: int = 0
    out_of_tries: int = 0
    webhooks_asked: int = 0
    webhooks_delivered: int = 0
    webhooks_resent_after_kill: int = 0
    drained: bool = False
    drain_seconds: float = 0.0
    total_seconds: float = 0.0
    faults: list[str] = field(default_factory=list)


def note(options: Options, message: str) -> None:
    if not options.quiet:
        print(f"chaos: {message}", file=sys.stderr, flush=True)


# -- the jobs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Planned:
    job_id: str  # as stored (in the owner's namespace)
    request: EnqueueRequest

    @property
    def function(self) -> str:
        return self.request.function_name

    @property
    def kwargs(self) -> dict[str, Any]:
        return self.request.kwargs


def plan_jobs(
    count: int,
    rng: random.Random,
    *,
    run_log: Path,
    notify_url: str,
    notify_share: float,
    marathon: float = 0.0,
) -> list[Planned]:
    """`count` mixed jobs; most are `traced` (their runs are logged). The first three run for
    `marathon` seconds (0: none): long past the Redis restart, whose lost leases must not let
    a second copy start while they run."""
    prefix = uuid.uuid4().hex[:6]
    plans: list[Planned] = []
    for index in range(count):
        draw = rng.random()
        kwargs: dict[str, Any]
        if draw < 0.15:
            function, kwargs = "add", {"a": index, "b": rng.randint(0, 9)}
        elif draw < 0.23:
            function, kwargs = "sleep", {"seconds": rng.choice([0.05, 0.1, 0.2])}
        elif draw < 0.27:
            function, kwargs = "fail", {"message": f"planned failure {index}"}
        elif draw < 0.32:
            function, kwargs = "flaky", {"failures": rng.choice([0, 1, 2, 5]), "defer": 0.2}
        else:
            function = "traced"
            kind = rng.random()
            kwargs = {"log": str(run_log), "seconds": rng.choice([0, 0, 0.05, 0.1, 0.3])}
            if kind < 0.12:
                kwargs["fail"] = True
            elif kind < 0.32:
                kwargs["failures"] = rng.choice([1, 2, 3])
            elif kind < 0.36:
                kwargs["failures"] = RETRYING_MAX_TRIES  # asks for one retry too many
            elif kind < 0.39:
                # Outlives leases, and a Redis restart: renewals and reconciliation matter.
                kwargs["seconds"] = rng.uniform(5.0, 8.0)
        if index < 3 and marathon > 0:
            function, kwargs = "traced", {"log": str(run_log), "seconds": marathon}
        requested = f"{prefix}-{index:06d}"
        request = EnqueueRequest(
            function_name=function,
            kwargs=kwargs,
            job_id=requested,
            notify_url=notify_url if rng.random() < notify_share else None,
        )
        plans.append(Planned(owner_job_id(OWNER.owner, requested), request))
    return plans


# -- the parts: database, Redis, workers, webhook receiver ------------------------------------


def plain_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def private_database(server_url: str) -> AsyncIterator[str]:
    """A new migrated database on `server_url`'s server; dropped at the end."""
    server = make_url(server_url)
    if not server.drivername.startswith("postgres"):
        raise ValueError("--database-url: give a PostgreSQL server URL")
    async with created_database(server, "vkp_chaos_") as url:
        yield url


async def drop_connections(database_url: str) -> int:
    """Terminate every other connection to the database; how many there were."""
    conn = await asyncpg.connect(plain_dsn(database_url), timeout=10)
    try:
        name = make_url(database_url).database
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        return sum(1 for row in rows if row[0])
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of our own that keeps nothing on disk: a restart starts it empty."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        arguments = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        arguments += ["--appendonly", "no", "--dir", str(self.directory)]
        return subprocess.Popen([self.binary, *arguments], stdout=subprocess.DEVNULL)

    async def start(self) -> None:
        self.process = self._spawn()
        client = Redis.from_url(self.url, socket_timeout=1)
        try:
            for _ in range(200):
                with contextlib.suppress(RedisError, OSError):
                    if await client.ping():
                        return
                if self.process.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            raise RuntimeError(f"redis-server did not start on port {self.port}")
        finally:
            await client.aclose()

    async def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            await asyncio.to_thread(self.process.wait, 10)
            self.process = None


class Workers:
    """Worker processes (`arq tests.worker_settings.WorkerSettings`) and when each one died."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env = env
        self.directory = directory
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Any] = []
        # pid -> time it was dead for sure (after a SIGKILL's wait, or the final stop)
        self.killed: dict[int, float] = {}
        self.stopped: dict[int, float] = {}
        self.crashed: dict[int, int] = {}  # pid -> exit code of a worker that died on its own

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.directory / f"worker-{len(self.processes)}.log").open("wb")
        self.logs.append(log)
        process = subprocess.Popen(
            [ARQ, "tests.worker_settings.WorkerSettings"],
            cwd=self.directory,  # not ROOT: a developer's ./.env must not reach the workers
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [process for process in self.processes if process.poll() is None]

    async def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.kill()
        await asyncio.to_thread(process.wait, 10)
        self.killed[process.pid] = time.time()

    async def stop_all(self) -> None:
        """SIGTERM (ARQ's graceful stop), SIGKILL after 10 s; close the logs."""
        try:
            for process in self.processes:
                code = process.poll()
                if code is not None and process.pid not in self.killed | self.stopped:
                    self.crashed[process.pid] = code
            for process in self.alive():
                process.send_signal(signal.SIGTERM)
            for process in self.processes:
                if process.pid in self.killed or process.pid in self.stopped:
                    continue
                try:
                    await asyncio.to_thread(process.wait, 10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    await asyncio.to_thread(process.wait, 10)
                self.stopped[process.pid] = time.time()
        finally:
            for log in self.logs:
                log.close()
            self.logs.clear()

    async def wait_up(self, redis_url: str, within: float) -> None:
        """Until every worker started so far has sent its first heartbeat."""
        client = Redis.from_url(redis_url, socket_timeout=2)
        wanted = {str(process.pid) for process in self.processes}
        deadline = time.monotonic() + within
        try:
            while True:
                members = await client.zrange(keys.workers_set(QUEUE), 0, -1)
                if wanted <= {member.decode().split(":")[-2] for member in members}:
                    return
                if any(process.poll() is not None for process in self.processes):
                    raise RuntimeError(f"a worker exited at start; see {self.directory}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the workers did not come up in {within:.0f} s")
                await asyncio.sleep(0.1)
        finally:
            await client.aclose()


@dataclass(frozen=True, slots=True)
class Delivery:
    job_id: str
    status: str
    at: float


class Receiver:
    """Logs every completion webhook it gets and answers 200."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.unreadable = 0

    async def handle(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            self.deliveries.append(Delivery(str(body["job_id"]), str(body["status"]), time.time()))
        except (ValueError, KeyError, TypeError):
            self.unreadable += 1
        return Response(b"ok")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hooks/{path:path}", self.handle, methods=["POST"])])


def worker_env(options: Options, *, redis_url: str, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "test",
        "REDIS_TIMEOUT": "2",
        "ARQ_POLL_DELAY": "0.05",
        "ARQ_LEASE": str(options.lease),
        "ARQ_RECONCILE_INTERVAL": "1",
        "ARQ_MAX_JOBS": str(options.max_jobs),
        "ARQ_HEALTH_CHECK_INTERVAL": "1",
        "ARQ_CRON_STATISTICS": "false",
        "ARQ_CRON_BACKUP": "false",
        "ARQ_CRON_CLEANUP": "false",
        "NOTIFY_ALLOW_HOSTS": "127.0.0.1/32",
        "NOTIFY_BACKOFF": "0.05",
    }


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Chaos:
    """What the run did, and when (time.time())."""

    kill_times: list[float] = field(default_factory=list)
    redis_restart_times: list[float] = field(default_factory=list)  # when the data was lost
    kills: int = 0
    redis_restarts: int = 0
    db_drops: int = 0
    connections_dropped: int = 0
    confirmed: set[str] = field(default_factory=set)
    uncertain: set[str] = field(default_factory=set)  # conflicts: an earlier attempt got in


async def enqueue_all(
    service: ArqService, plans: list[Planned], *, window: float, chaos: Chaos, options: Options
) -> None:
    """Queue the plans in batches spread over `window` seconds; retry a batch an outage
    refused (its ids make a retry safe: a batch is all or nothing)."""
    # Small batches, a tenth of a second apart, so that jobs run all the time (no idle gaps for
    # a kill or the Redis restart to fall into).
    count = max(1, min(len(plans), int(window * 10)))
    size = max(1, min(200, -(-len(plans) // count)))
    batches = [plans[i : i + size] for i in range(0, len(plans), size)]
    start = time.monotonic()
    for number, batch in enumerate(batches):
        await asyncio.sleep(max(0.0, start + window * number / len(batches) - time.monotonic()))
        requests = [plan.request for plan in batch]
        for _ in range(ENQUEUE_ATTEMPTS):
            try:
                responses = await service.enqueue_batch(requests, principal=OWNER)
            except JobConflict:
                chaos.uncertain.update(plan.job_id for plan in batch)
                break
            except (AppError, SQLAlchemyError, RedisError, OSError, TimeoutError) as exc:
                note(options, f"enqueue refused ({type(exc).__name__}); retrying")
                await asyncio.sleep(0.5)
            else:
                chaos.confirmed.update(response.job_id for response in responses)
                break


async def make_chaos(
    options: Options,
    rng: random.Random,
    *,
    workers: Workers,
    redis: PrivateRedis,
    database_url: str,
    chaos: Chaos,
) -> None:
    """Kills every `kill_every` s, one Redis restart (at 40 %), one drop (at 60 %)."""
    events: list[tuple[float, str]] = []
    at = options.kill_every
    while options.kill_every > 0 and at < options.seconds:
        events.append((at, "kill"))
        at += options.kill_every
    if options.redis_restart:
        events.append((options.seconds * 0.4, "redis"))
    if options.db_drop:
        events.append((options.seconds * 0.6, "database"))
    start = time.monotonic()
    for at, event in sorted(events):
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        if event == "kill":
            alive = workers.alive()
            if alive:
                victim = rng.choice(alive)
                await workers.kill(victim)
                chaos.kill_times.append(time.time())
                chaos.kills += 1
                note(options, f"killed worker {victim.pid}; starting another")
            workers.start()
        elif event == "redis":
            await redis.kill()
            chaos.redis_restart_times.append(time.time())
            await asyncio.sleep(0.5)
            await redis.start()
            chaos.redis_restarts += 1
            note(options, "Redis restarted empty")
        else:
            dropped = await drop_connections(database_url)
            chaos.db_drops += 1
            chaos.connections_dropped += dropped
            note(options, f"dropped {dropped} database connection(s)")
    await asyncio.sleep(max(0.0, start + options.seconds - time.monotonic()))


async def drained(database_url: str, redis_url: str) -> bool:
    """Every job and webhook job finished on record, none owed a webhook, Redis' queue empty."""
    try:
        conn = await asyncpg.connect(plain_dsn(database_url), timeout=5)
        try:
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE status <> ALL($1::text[])) AS active,"
                " count(*) FILTER (WHERE notify_url IS NOT NULL AND notification_job_id IS NULL)"
                " AS owed FROM arq_jobs",
                list(FINISHED),
            )
        finally:
            await conn.close()
        if row is None or row["active"] or row["owed"]:
            return False
        client = Redis.from_url(redis_url, socket_timeout=2)
        try:
            return int(await client.zcard(QUEUE)) == 0
        finally:
            await client.aclose()
    except (OSError, asyncpg.PostgresError, RedisError, TimeoutError):
        return False


async def run(options: Options) -> Report:
    """Run the chaos and check the guarantees; the figures and the faults found."""
    seed = options.seed if options.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    work = options.work_dir or Path(tempfile.mkdtemp(prefix="vkp_chaos_"))
    work.mkdir(parents=True, exist_ok=True)
    report = Report(seed=seed, jobs=options.jobs)
    began = time.monotonic()
    chaos = Chaos()
    run_log = work / "runs.log"
    try:
        async with AsyncExitStack() as stack:
            database_url = await stack.enter_async_context(private_database(options.database_url))
            redis = PrivateRedis(options.redis_server, work)
            stack.push_async_callback(redis.kill)
            await redis.start()
            receiver = Receiver()
            port = await stack.enter_async_context(serve_app(receiver.app()))
            env = worker_env(options, redis_url=redis.url, database_url=database_url)
            workers = Workers(env, work)
            stack.push_async_callback(workers.stop_all)
            for _ in range(options.workers):
                workers.start()
            await workers.wait_up(redis.url, within=90)
            note(options, f"{options.workers} workers up; chaos for {options.seconds:g} s")
            settings = Settings(
                _env_file=None,
                redis_url=redis.url,
                database_url=database_url,
                environment=Environment.TEST,
                redis_timeout=2.0,
                database_timeout=5.0,
            )
            arq_settings = ArqSettings(
                _env_file=None,
                enqueue_rate_limit=0,
                lease=options.lease,
                poll_delay=0.05,
            )
            service = await stack.enter_async_context(
                open_arq_service(
                    settings=settings, arq_settings=arq_settings, registry=test_registry
                )
            )
            plans = plan_jobs(
                options.jobs,
                rng,
                run_log=run_log,
                notify_url=f"http://127.0.0.1:{port}/hooks/chaos",
                notify_share=options.notify_share,
                marathon=min(120.0, options.seconds * 0.8),
            )
            enqueuer = asyncio.create_task(
                enqueue_all(
                    service, plans, window=options.seconds * 0.75, chaos=chaos, options=options
                )
            )
            try:
                await make_chaos(
                    options,
                    rng,
                    workers=workers,
                    redis=redis,
                    database_url=database_url,
                    chaos=chaos,
                )
            finally:
                await enqueuer
            calm = time.monotonic()
            deadline = calm + options.drain_timeout
            while True:
                report.drained = await drained(database_url, redis.url)
                if report.drained or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.25)
            report.drain_seconds = time.monotonic() - calm
            note(options, f"drained: {report.drained} after {report.drain_seconds:.1f} s")
            await asyncio.sleep(options.settle)  # a wrong re-run would show up now
            await workers.stop_all()
            rows = await history_rows(database_url)
            check(options, report, plans, rows, read_runs(run_log), workers, receiver, chaos)
            save_logs(work, receiver, chaos, workers)
    finally:
        if options.work_dir is None and not options.keep and not report.faults:
            shutil.rmtree(work, ignore_errors=True)
        else:
            note(options, f"logs kept in {work}")
    report.total_seconds = time.monotonic() - began
    return report


def save_logs(work: Path, receiver: Receiver, chaos: Chaos, workers: Workers) -> None:
    """What happened when, beside the run log, for a post-mortem (`--keep`)."""
    lines = [f"{d.at:.3f} {d.job_id} {d.status}" for d in receiver.deliveries]
    (work / "webhooks.log").write_text("".join(f"{line}\n" for line in lines))
    events = [(at, "worker killed") for at in chaos.kill_times]
    events += [(at, "Redis killed (restarted empty)") for at in chaos.redis_restart_times]
    events += [(at, f"worker {pid} dead") for pid, at in workers.killed.items()]
    (work / "chaos.log").write_text("".join(f"{at:.3f} {what}\n" for at, what in sorted(events)))


async def history_rows(database_url: str) -> dict[str, dict[str, Any]]:
    conn = await asyncpg.connect(plain_dsn(database_url), timeout=10)
    try:
        records = await conn.fetch(
            "SELECT job_id, function, status, tries, finished_at, result, error, notify_url,"
            " notification_job_id FROM arq_jobs"
        )
    finally:
        await conn.close()
    rows: dict[str, dict[str, Any]] = {}
    for record in records:
        row = dict(record)
        for name in ("result", "error"):
            row[name] = json.loads(row[name]) if row[name] is not None else None
        row["finished"] = row["finished_at"].timestamp() if row["finished_at"] else None
        rows[row["job_id"]] = row
    return rows


# -- the checks -------------------------------------------------------------------------------


@dataclass
class Run:
    job_id: str
    job_try: int
    pid: int
    start: float
    end: float | None = None
    outcome: str | None = None


def read_runs(log: Path) -> dict[str, list[Run]]:
    """The runs of each `traced` job, in start order, each paired with its end line."""
    runs: dict[str, list[Run]] = defaultdict(list)
    open_runs: dict[tuple[str, int, int], Run] = {}
    lines = log.read_text().splitlines() if log.exists() else []
    for line in lines:
        parts = line.split()
        job_id, job_try, pid, at = parts[1], int(parts[2]), int(parts[3]), float(parts[4])
        if parts[0] == "start":
            run = Run(job_id, job_try, pid, at)
            runs[job_id].append(run)
            open_runs[(job_id, job_try, pid)] = run
        elif (started := open_runs.pop((job_id, job_try, pid), None)) is not None:
            started.end, started.outcome = at, parts[5]
    return runs


def untraced_tries(
    error: dict[str, Any], runs: list[Run], row: dict[str, Any], kill_times: list[float]
) -> bool:
    """Whether a job that ran out of tries lost some to kills its trace cannot show: ARQ counts a
    try when a worker picks the job up, and a worker killed between the pick-up and the task's
    first line leaves no trace of it. Only as many such tries as workers were killed before the
    job's end."""
    counted = re.search(r"after (\d+) tries", error.get("message", ""))
    if counted is None or row.get("finished") is None:
        return False
    missing = int(counted.group(1)) - len(runs)
    kills = sum(1 for at in kill_times if at <= row["finished"])
    return 0 < missing <= kills


def ending_died_with_worker(runs: list[Run], killed: dict[int, float]) -> bool:
    """Whether a run ended the job but its worker was killed right after, before the ending
    was stored for good: the job then runs again (at least once), and one that retried up to
    its last try is out of tries on that run."""
    for run in runs:
        died = killed.get(run.pid)
        if run.end is None or died is None or not ends_the_job(run):
            continue
        if 0 <= died - run.end <= DEATH_MARGIN:
            return True
    return False


def ends_the_job(run: Run) -> bool:
    """The run ended the job as its task said: a result, an error, a retry on the last try."""
    return run.outcome in ("ok", "fail") or (
        run.outcome == "retry" and run.job_try >= RETRYING_MAX_TRIES
    )


def expected_outcome(plan: Planned, row: dict[str, Any]) -> str | None:
    """What is wrong with the job's ending given its task, or None."""
    status, error, result = row["status"], row["error"] or {}, row["result"]
    kwargs, function = plan.kwargs, plan.function
    want: tuple[str, str | None, Any]
    if function == "add":
        want = ("complete", None, {"sum": kwargs["a"] + kwargs["b"]})
    elif function == "sleep":
        want = ("complete", None, {"slept": kwargs["seconds"]})
    elif function == "fail" or kwargs.get("fail"):
        want = ("failed", "ValueError", None)
    elif kwargs.get("failures", 0) >= RETRYING_MAX_TRIES:
        want = ("failed", "GaveUp", None)
    else:
        want = ("complete", None, None)
    if status != want[0] or (want[1] is not None and error.get("type") != want[1]):
        return f"{want[0]} ({want[1] or 'no error'}) expected, got {status} {error or ''}"
    if want[2] is not None and result != want[2]:
        return f"result {want[2]} expected, got {result}"
    if function in ("flaky", "traced") and status == "complete":
        tried = result.get("succeeded_on_try", result.get("try")) if result else None
        if not isinstance(tried, int) or tried <= kwargs.get("failures", 0):
            return f"completed on try {tried}, but {kwargs.get('failures', 0)} tries should fail"
    return None


def check(
    options: Options,
    report: Report,
    plans: list[Planned],
    rows: dict[str, dict[str, Any]],
    runs: dict[str, list[Run]],
    workers: Workers,
    receiver: Receiver,
    chaos: Chaos,
) -> None:
    faults = report.faults
    report.kills, report.redis_restarts = chaos.kills, chaos.redis_restarts
    report.db_drops, report.connections_dropped = chaos.db_drops, chaos.connections_dropped
    if not report.drained:
        active = [job_id for job_id, row in rows.items() if row["status"] not in FINISHED]
        faults.append(
            f"the queue did not drain in {options.drain_timeout:g} s: {len(active)} job(s) not"
            f" finished (e.g. {active[:3]})"
        )
    accepted = [plan for plan in plans if plan.job_id in rows]
    report.accepted = len(accepted)
    for plan in plans:
        if plan.job_id in chaos.confirmed and plan.job_id not in rows:
            faults.append(f"{plan.job_id}: accepted, but not in the job history")
        elif plan.job_id not in rows:
            faults.append(f"{plan.job_id}: never accepted ({ENQUEUE_ATTEMPTS} attempts)")
    for pid, code in workers.crashed.items():
        faults.append(f"worker {pid} exited on its own (code {code}); see its log")
    deaths = workers.killed
    for plan in accepted:
        row = rows[plan.job_id]
        job_runs = sorted(runs.get(plan.job_id, []), key=lambda run: run.start)
        interrupted = [run for run in job_runs if run.end is None]
        report.traced_runs += len(job_runs)
        report.interrupted_runs += len(interrupted)
        problem = expected_outcome(plan, row)
        error = row["error"] or {}
        if problem and error.get("type") == "MaxTriesExceeded":
            # Out of tries because runs were cut short: allowed, if they were (traced shows it),
            # or if tries were taken by workers killed before the task wrote its first line.
            if plan.function == "traced" and not (
                interrupted
                or untraced_tries(error, job_runs, row, chaos.kill_times)
                or ending_died_with_worker(job_runs, deaths)
            ):
                faults.append(f"{plan.job_id}: ran out of tries, no run cut short: {problem}")
            else:
                report.out_of_tries += 1
        elif problem:
            faults.append(f"{plan.job_id} ({plan.function} {plan.kwargs}): {problem}")
        if plan.function == "traced":
            retries = sum(1 for run in job_runs if run.outcome == "retry")
            report.reruns += max(0, len(job_runs) - 1 - retries)
            faults.extend(
                check_runs(
                    plan.job_id,
                    job_runs,
                    row,
                    deaths,
                    workers.stopped,
                    restarts=chaos.redis_restart_times,
                )
            )
        else:
            planned = min(plan.kwargs.get("failures", 0), RETRYING_MAX_TRIES - 1) + 1
            report.reruns += max(0, int(row["tries"] or 0) - planned)
    check_webhooks(report, accepted, rows, receiver, chaos)


def check_runs(
    job_id: str,
    runs: list[Run],
    row: dict[str, Any],
    killed: dict[int, float],
    stopped: dict[int, float],
    *,
    restarts: Sequence[float] = (),
) -> list[str]:
    """Runs of one job: never two at once, none after a run that ended the job (its task said
    so: a result, an error, a retry asked for on the last try) unless that run's worker died
    before it could store the ending, none after the recorded ending."""
    faults: list[str] = []
    previous: Run | None = None
    previous_end = 0.0
    ended: Run | None = None
    for run in runs:
        if ended is not None and ended.end is not None and run.start > ended.end:
            # Redis lost its data (was killed) this long after (+) or before (-) that end.
            lost = [at - ended.end for at in restarts if at < run.start and at - ended.end > -5]
            why = f" (Redis killed {lost[0]:+.2f} s from that end)" if lost else ""
            faults.append(
                f"{job_id}: try {run.job_try} (pid {run.pid}) started at {run.start:.3f} after"
                f" try {ended.job_try} (pid {ended.pid}) had ended the job ({ended.outcome}) at"
                f" {ended.end:.3f}{why}"
            )
        if previous is not None and run.start < previous_end:
            faults.append(
                f"{job_id}: try {run.job_try} (pid {run.pid}) started at {run.start:.3f} while"
                f" try {previous.job_try} (pid {previous.pid}) ran until {previous_end:.3f}"
            )
        if row["finished"] is not None and run.start > row["finished"] + 0.005:
            faults.append(
                f"{job_id}: try {run.job_try} (pid {run.pid}) started at {run.start:.3f}, after"
                f" its recorded ending at {row['finished']:.3f}"
            )
        end = run.end
        if end is None:
            end = killed.get(run.pid)
        if end is None:
            faults.append(
                f"{job_id}: try {run.job_try} (pid {run.pid}) never ended although its worker"
                + (" lived until the queue drained" if run.pid in stopped else " was not killed")
            )
            end = stopped.get(run.pid, float("inf"))
        if end >= previous_end:
            previous, previous_end = run, end
        final = ends_the_job(run)
        died = killed.get(run.pid)
        stored = (
            died is None
            or run.end is None
            or died - _redis_copy_lost_at(run.end, died, restarts) > DEATH_MARGIN
        )
        if ended is None and final and stored:
            ended = run
    return faults


def _redis_copy_lost_at(end: float, died: float, restarts: Sequence[float]) -> float:
    """When a run's ending, on its way to the history, was left in its worker's memory only: at
    the last Redis restart between the end and the worker's death, else at the end itself."""
    return max((at for at in restarts if end < at < died), default=end)


def check_webhooks(
    report: Report,
    accepted: list[Planned],
    rows: dict[str, dict[str, Any]],
    receiver: Receiver,
    chaos: Chaos,
) -> None:
    faults = report.faults
    by_job: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in receiver.deliveries:
        by_job[delivery.job_id].append(delivery)
    asked = {plan.job_id for plan in accepted if plan.request.notify_url is not None}
    report.webhooks_asked = len(asked)
    report.webhooks_delivered = sum(len(by_job[job_id]) for job_id in asked)
    if receiver.unreadable:
        faults.append(f"{receiver.unreadable} webhook(s) without a job id or status")
    for job_id in sorted(set(by_job) - asked):
        faults.append(f"{job_id}: a webhook arrived for a job that asked for none")
    for job_id in sorted(asked):
        got = sorted(by_job[job_id], key=lambda delivery: delivery.at)
        status = rows[job_id]["status"]
        if not got:
            faults.append(f"{job_id}: asked for a webhook, got none (status {status})")
            continue
        if any(delivery.status != status for delivery in got):
            faults.append(f"{job_id}: webhook said {[d.status for d in got]}, history {status}")
        if len(got) > 1:
            first, last = got[0].at, got[-1].at
            if any(first < at < min(last, first + DEATH_MARGIN) for at in chaos.kill_times):
                # Its sender died after the POST, before it could store its ending.
                report.webhooks_resent_after_kill += len(got) - 1
            else:
                lost = [at for at in chaos.redis_restart_times if first < at < last]
                why = f" (Redis restarted empty {lost[0] - first:.2f} s after the first)"
                faults.append(
                    f"{job_id}: {len(got)} webhooks for one ending at"
                    f" {', '.join(f'{d.at:.3f}' for d in got)}" + (why if lost else "")
                )


# -- the command ------------------------------------------------------------------------------


def format_table(options: Options, report: Report) -> str:
    rows = [
        ("jobs enqueued", f"{report.jobs} ({report.accepted} accepted; --seed {report.seed})"),
        (
            "workers",
            f"{options.workers}, one SIGKILLed every {options.kill_every:g} s"
            if options.kill_every
            else f"{options.workers}, none killed",
        ),
        ("workers killed", str(report.kills)),
        ("Redis restarts (data lost)", str(report.redis_restarts)),
        (
            "database drops",
            f"{report.db_drops} ({report.connections_dropped} connections terminated)",
        ),
        ("runs of traced jobs", f"{report.traced_runs} ({report.interrupted_runs} cut short)"),
        ("re-runs (beyond planned retries)", str(report.reruns)),
        ("out of tries after cut-short runs", str(report.out_of_tries)),
        (
            "completion webhooks",
            f"{report.webhooks_asked} asked, {report.webhooks_delivered} delivered,"
            f" {report.webhooks_resent_after_kill} re-sent after a kill",
        ),
        (
            "time to drain",
            f"{report.drain_seconds:.1f} s after the chaos" + ("" if report.drained else " (NOT)"),
        ),
        ("total time", f"{report.total_seconds:.1f} s"),
        ("faults", str(len(report.faults))),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'metric'.ljust(width)} | value", f"{'-' * width}-|------"]
    lines += [f"{name.ljust(width)} | {value}" for name, value in rows]
    return "\n".join(lines)


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description="Enqueue mixed jobs while killing workers, restarting Redis empty and"
        " dropping database connections; check that every job ended once and as its task says.",
    )
    defaults = Options()
    parser.add_argument(
        "--jobs", type=_positive(int), default=defaults.jobs, help="jobs to enqueue"
    )
    parser.add_argument(
        "--workers", type=_positive(int), default=defaults.workers, help="worker processes"
    )
    parser.add_argument(
        "--kill-every",
        type=float,
        default=defaults.kill_every,
        help="seconds between worker kills (0: none)",
    )
    parser.add_argument(
        "--seconds",
        type=_positive(float),
        default=defaults.seconds,
        help="how long the chaos lasts; jobs are enqueued during its first three quarters",
    )
    parser.add_argument(
        "--drain-timeout",
        type=_positive(float),
        default=defaults.drain_timeout,
        help="seconds the queue may take to drain after the chaos",
    )
    parser.add_argument(
        "--settle", type=float, default=defaults.settle, help="seconds to watch after draining"
    )
    parser.add_argument(
        "--notify-share",
        type=_share,
        default=defaults.notify_share,
        help="share of the jobs that ask for a completion webhook",
    )
    parser.add_argument("--lease", type=float, default=defaults.lease, help="ARQ_LEASE (>= 2)")
    parser.add_argument(
        "--max-jobs", type=_positive(int), default=defaults.max_jobs, help="ARQ_MAX_JOBS"
    )
    parser.add_argument("--no-redis-restart", action="store_true", help="keep Redis up")
    parser.add_argument("--no-db-drop", action="store_true", help="keep the DB connections")
    parser.add_argument("--seed", type=int, default=None, help="repeat a run's mix of jobs")
    parser.add_argument(
        "--database-url", default=defaults.database_url, help="a PostgreSQL server to use"
    )
    parser.add_argument("--redis-server", default=defaults.redis_server)
    parser.add_argument("--keep", action="store_true", help="keep the logs (runs, workers)")
    args = parser.parse_args(argv)
    if args.kill_every < 0 or args.settle < 0:
        parser.error("--kill-every and --settle must be >= 0")
    if args.lease < 2:
        parser.error("--lease must be >= 2 (ARQ_LEASE)")
    if shutil.which(args.redis_server) is None:
        parser.error(f"--redis-server: {args.redis_server!r} not found")
    return Options(
        jobs=args.jobs,
        workers=args.workers,
        kill_every=args.kill_every,
        seconds=args.seconds,
        drain_timeout=args.drain_timeout,
        settle=args.settle,
        notify_share=args.notify_share,
        lease=args.lease,
        max_jobs=args.max_jobs,
        redis_restart=not args.no_redis_restart,
        db_drop=not args.no_db_drop,
        seed=args.seed,
        database_url=args.database_url,
        redis_server=args.redis_server,
        keep=args.keep,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        report = asyncio.run(run(options))
    except KeyboardInterrupt:
        print("chaos: interrupted", file=sys.stderr)
        return 130
    print(format_table(options, report))
    for fault in report.faults[:50]:
        print(f"FAULT {fault}")
    if len(report.faults) > 50:
        print(f"... and {len(report.faults) - 50} more")
    return 1 if report.faults else 0


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
