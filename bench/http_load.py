"""HTTP load on the job API: virtual users loop enqueue + status; then every accepted job checked.

    python -m bench.http_load --url http://127.0.0.1:8000 --api-key KEY --users 50 --seconds 30
    python -m bench.http_load --start          # `make bench-http`: its own stack, one command

Each virtual user has its own client (`httpx.AsyncClient`, one connection) and loops for
`--seconds`: `POST /api/v1/arq/enqueue` of a no-op task (`--task`, `ping` by default), then
`GET /api/v1/arq/status/{job_id}` of the job it got. The clients share one event loop (uvloop
when installed). It prints requests/s, p50/p95/p99/max per endpoint (of every answered
request), the errors by status code or exception, and then waits (at most `--drain-timeout`
seconds) for every job that was accepted (202) to finish, reading their statuses through the
same clients: the exit code is 1 unless every accepted job completed.

With `--start` it runs its own stack instead of `--url`: a redis-server and a migrated
PostgreSQL database of its own (on `--database-url`'s server; see bench/_stack.py), the API as
`make api` runs it (`uvicorn src.main:app` on a free port) and one worker as `make worker` does
(`arq src.arq.worker.WorkerSettings`, ARQ_MAX_JOBS=`--worker-max-jobs`), with an API key of its
own and `ARQ_ENQUEUE_RATE_LIMIT=0` (the default, 600 jobs a minute per owner, would refuse the
load); it then also reports the API's CPU time per request and the worker's per job.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench._stack import (
    BIN,
    DEFAULT_DATABASE_URL,
    BenchError,
    Child,
    free_port,
    loop_name,
    module_env,
    percentile,
    private_stack,
    run,
    wait_until,
)

PREFIX = "/api/v1/arq"
FINISHED = {"complete", "failed", "aborted"}


@dataclass(frozen=True)
class Options:
    url: str = "http://127.0.0.1:8000"
    api_key: str = ""
    users: int = 50
    seconds: float = 30.0
    task: str = "ping"
    kwargs: dict[str, Any] = field(default_factory=dict)
    drain_timeout: float = 120.0
    request_timeout: float = 30.0
    start: bool = False
    worker_max_jobs: int = 100
    database_url: str = DEFAULT_DATABASE_URL
    redis_server: str = "redis-server"
    keep: bool = False


@dataclass
class Endpoint:
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + sum(
            count for what, count in self.errors.items() if not what.isdigit()
        )


@dataclass
class Load:
    enqueue: Endpoint = field(default_factory=Endpoint)
    status: Endpoint = field(default_factory=Endpoint)
    accepted: list[str] = field(default_factory=list)
    ended: dict[str, str] = field(default_factory=dict)  # job id -> finished status
    seconds: float = 0.0
    drain_seconds: float = 0.0
    unknown: int = 0  # accepted, then "not found"
    api_cpu_ms: float | None = None  # per request (--start)
    worker_cpu_ms: float | None = None  # per accepted job (--start)
    client_loop: str = "asyncio"


async def timed(endpoint: Endpoint, request: Any) -> httpx.Response | None:
    """Send; note the latency of an answer (and its status if not 2xx) or the exception."""
    began = time.perf_counter()
    try:
        response: httpx.Response = await request
    except httpx.HTTPError as exc:
        endpoint.errors[type(exc).__name__] += 1
        await asyncio.sleep(0.05)  # a refused connection must not spin
        return None
    endpoint.latencies_ms.append((time.perf_counter() - began) * 1000)
    if not response.is_success:
        endpoint.errors[str(response.status_code)] += 1
    return response


def status_of(response: httpx.Response | None) -> str | None:
    if response is None or not response.is_success:
        return None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(response.json()["status"])
    return None


async def virtual_user(client: httpx.AsyncClient, load: Load, body: bytes, until: float) -> None:
    while time.perf_counter() < until:
        response = await timed(load.enqueue, client.post(f"{PREFIX}/enqueue", content=body))
        if response is None or response.status_code != httpx.codes.ACCEPTED:
            continue
        job_id = str(response.json()["job_id"])
        load.accepted.append(job_id)
        status = status_of(await timed(load.status, client.get(f"{PREFIX}/status/{job_id}")))
        if status in FINISHED:
            load.ended[job_id] = status


async def drain(clients: list[httpx.AsyncClient], load: Load, within: float) -> None:
    """Until every accepted job finished (or was not found), at most `within` seconds."""
    began = time.perf_counter()
    deadline = began + within
    unknown: set[str] = set()
    while True:
        pending = [job for job in load.accepted if job not in load.ended and job not in unknown]
        if not pending or time.perf_counter() > deadline:
            break
        jobs = iter(pending)

        async def check(client: httpx.AsyncClient, jobs: Iterator[str]) -> None:
            for job_id in jobs:
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(f"{PREFIX}/status/{job_id}")
                    if response.status_code == httpx.codes.NOT_FOUND:
                        unknown.add(job_id)
                    elif (status := status_of(response)) in FINISHED:
                        load.ended[job_id] = str(status)

        await asyncio.gather(*(check(client, jobs) for client in clients))
        await asyncio.sleep(0.2)
    load.unknown = len(unknown)
    load.drain_seconds = time.perf_counter() - began


async def drive(
    options: Options, url: str, api_key: str, api: Child | None, worker: Child | None
) -> Load:
    load = Load(client_loop=loop_name())
    body = json.dumps({"function_name": options.task, "kwargs": options.kwargs}).encode()
    headers = {"X-API-Key": api_key, "Content-Type": "application/json"}
    async with contextlib.AsyncExitStack() as exits:
        clients = [
            await exits.enter_async_context(
                httpx.AsyncClient(
                    base_url=url,
                    headers=headers,
                    timeout=options.request_timeout,
                    limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                )
            )
            for _ in range(options.users)
        ]
        api_cpu = api.cpu_seconds() if api is not None else 0.0
        worker_cpu = worker.cpu_seconds() if worker is not None else 0.0
        began = time.perf_counter()
        until = began + options.seconds
        await asyncio.gather(*(virtual_user(client, load, body, until) for client in clients))
        load.seconds = time.perf_counter() - began
        if api is not None:
            requests = load.enqueue.requests + load.status.requests
            load.api_cpu_ms = (api.cpu_seconds() - api_cpu) * 1000 / max(1, requests)
        await drain(clients, load, options.drain_timeout)
        if worker is not None and load.accepted:
            worker_cpu = worker.cpu_seconds() - worker_cpu
            load.worker_cpu_ms = worker_cpu * 1000 / len(load.accepted)
    return load


async def started_stack(options: Options) -> Load:
    """The load against a stack of its own: private Redis and database, the API, one worker."""
    async with private_stack(
        database_server=options.database_url, redis_server=options.redis_server, keep=options.keep
    ) as stack:
        api_key = f"bench-{secrets.token_hex(16)}"
        env = module_env(
            redis_url=stack.redis_url,
            database_url=stack.database_url,
            API_KEYS=f"bench:user:{api_key}",
            ARQ_ENQUEUE_RATE_LIMIT="0",
            ARQ_MAX_JOBS=str(options.worker_max_jobs),
        )
        port = free_port()
        api = stack.child(
            "api",
            [str(BIN / "uvicorn"), "src.main:app", "--host", "127.0.0.1", "--port", str(port)],
            env,
        )
        worker = stack.child("worker", [str(BIN / "arq"), "src.arq.worker.WorkerSettings"], env)
        url = f"http://127.0.0.1:{port}"
        try:
            api.start()
            worker.start()
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:

                async def ready() -> bool:
                    with contextlib.suppress(httpx.HTTPError):
                        response = await client.get(f"{PREFIX}/health")
                        workers = response.json().get("details", {}).get("workers")
                        return response.is_success and bool(workers)
                    return False

                await wait_until(ready, within=120, what="API healthy with a live worker")
            print(f"http_load: started the API at {url} and one worker", file=sys.stderr)
            return await drive(options, url, api_key, api, worker)
        finally:
            await api.stop()
            await worker.stop()


def format_report(options: Options, url: str, load: Load) -> str:
    total = load.enqueue.requests + load.status.requests
    rate = total / load.seconds if load.seconds else 0.0
    pairs = len(load.accepted) / load.seconds if load.seconds else 0.0
    lines = [
        f"{options.users} users for {load.seconds:.1f} s against {url} (clients on"
        f" {load.client_loop}, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)",
        f"requests: {total} in all, {rate:.1f} requests/s; {len(load.accepted)} jobs accepted,"
        f" {pairs:.1f} enqueue+status pairs/s",
    ]
    rows = [["endpoint", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"]]
    for name, endpoint in (("enqueue", load.enqueue), ("status", load.status)):
        times = endpoint.latencies_ms
        rows.append(
            [
                name,
                str(endpoint.requests),
                f"{endpoint.requests / load.seconds:.1f}" if load.seconds else "0",
                *(f"{percentile(times, share):.1f}" for share in (50, 95, 99, 100)),
                str(sum(endpoint.errors.values())),
            ]
        )
    widths = [max(len(row[index]) for row in rows) for index in range(len(rows[0]))]
    for number, row in enumerate(rows):
        cells = [
            cell.ljust(width) if index == 0 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append(" | ".join(cells))
        if number == 0:
            lines.append("-|-".join("-" * width for width in widths))
    for name, endpoint in (("enqueue", load.enqueue), ("status", load.status)):
        errors = ", ".join(f"{what} x {count}" for what, count in endpoint.errors.most_common())
        lines.append(f"errors, {name}: {errors or 'none'}")
    if load.api_cpu_ms is not None:
        lines.append(f"API CPU: {load.api_cpu_ms:.2f} ms per request (uvicorn, one process)")
    if load.worker_cpu_ms is not None:
        lines.append(f"worker CPU: {load.worker_cpu_ms:.2f} ms per accepted job")
    outcomes = Counter(load.ended.values())
    unfinished = len(load.accepted) - len(load.ended) - load.unknown
    lines.append(
        f"jobs: {len(load.accepted)} accepted; {outcomes['complete']} complete,"
        f" {outcomes['failed']} failed, {outcomes['aborted']} aborted, {unfinished} not finished,"
        f" {load.unknown} not found ({load.drain_seconds:.1f} s after the load)"
    )
    lines.append(f"every accepted job completed: {'yes' if all_completed(load) else 'NO'}")
    return "\n".join(lines)


def all_completed(load: Load) -> bool:
    complete = sum(1 for status in load.ended.values() if status == "complete")
    return bool(load.accepted) and complete == len(load.accepted)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http_load",
        description="Virtual users looping enqueue + status against the job API; latencies,"
        " errors, and whether every accepted job completed.",
    )
    defaults = Options()
    add = parser.add_argument
    add("--url", default=None, help=f"the API's base URL (default {defaults.url})")
    add("--api-key", default=os.environ.get("VKP_API_KEY", ""), help="default: $VKP_API_KEY")
    add("--users", type=int, default=defaults.users, help="virtual users (one client each)")
    add("--seconds", type=float, default=defaults.seconds, help="how long the load lasts")
    add("--task", default=defaults.task, help="the task to enqueue (a no-op)")
    add("--kwargs", default="{}", help="its arguments, a JSON object")
    add("--drain-timeout", type=float, default=defaults.drain_timeout)
    add("--request-timeout", type=float, default=defaults.request_timeout)
    add("--start", action="store_true", help="start a private stack (API + one worker)")
    add("--worker-max-jobs", type=int, default=defaults.worker_max_jobs, help="with --start")
    add("--database-url", default=defaults.database_url, help="with --start: PostgreSQL server")
    add("--redis-server", default=defaults.redis_server, help="with --start")
    add("--keep", action="store_true", help="with --start: keep the API's and worker's logs")
    args = parser.parse_args(argv)
    if args.users < 1 or args.seconds <= 0 or args.drain_timeout < 0:
        parser.error("--users must be >= 1, --seconds > 0, --drain-timeout >= 0")
    if args.start and args.url is not None:
        parser.error("--start runs its own API: give --url or --start, not both")
    if not args.start and not args.api_key:
        parser.error("--api-key (or VKP_API_KEY) is needed against --url")
    if args.start and shutil.which(args.redis_server) is None:
        parser.error(f"--redis-server: {args.redis_server!r} not found")
    try:
        kwargs = json.loads(args.kwargs)
    except ValueError as exc:
        parser.error(f"--kwargs: not JSON ({exc})")
    if not isinstance(kwargs, dict):
        parser.error("--kwargs: give a JSON object")
    return Options(
        url=(args.url or defaults.url).rstrip("/"),
        api_key=args.api_key,
        users=args.users,
        seconds=args.seconds,
        task=args.task,
        kwargs=kwargs,
        drain_timeout=args.drain_timeout,
        request_timeout=args.request_timeout,
        start=args.start,
        worker_max_jobs=args.worker_max_jobs,
        database_url=args.database_url,
        redis_server=args.redis_server,
        keep=args.keep,
    )


async def measure(options: Options) -> int:
    if options.start:
        load = await started_stack(options)
        url = "a private stack (--start)"
    else:
        load = await drive(options, options.url, options.api_key, None, None)
        url = options.url
    print(format_report(options, url, load))
    return 0 if all_completed(load) else 1


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        return run(measure(options))
    except BenchError as exc:
        print(f"ERROR: {exc}")
        return 1
    except KeyboardInterrupt:
        print("http_load: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
