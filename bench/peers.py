"""The module against its peers (saq, taskiq, arq) on one machine and one private Redis.

Run it from the repository root: `python -m bench.peers` (`make bench-peers`, which installs the
optional `bench` group: saq, taskiq, taskiq-redis, psutil); `--help` lists the flags. It installs
nothing: a peer that is not installed is named and skipped.

It starts its own redis-server (a free port, nothing on disk) and a migrated PostgreSQL database
on `--database-url`'s server (dropped at the end), then measures each library (rows: the module
with `enqueue_job`, the module with `enqueue_batch`, saq, taskiq, arq; see bench/peer_clients.py
for each one's calls and worker command) in `--passes` passes that alternate between them
(module, module-batch, saq, taskiq, arq, module, ...). Redis is flushed before each library's
pass. A pass:

1. enqueue: `--jobs` no-op jobs through the client API, `--in-flight` calls at a time (the
   module's batches: `--batch-size` jobs a call, `--batch-in-flight` calls at a time), no worker
   running: jobs/s;
2. process: ONE worker process of the library's own command, `--concurrency` jobs at a time
   (the module: `arq src.arq.worker.WorkerSettings` with ARQ_MAX_JOBS), drains that backlog:
   jobs/s from the last look before its first job ended to the look that found every job done
   (the module: its history rows finished too), looking every 5 ms; the worker's CPU time
   (user + system, children included) over the same span, per job;
3. round trip: one warm-up, then `--round-trips` sequential enqueue-then-wait-for-the-result
   (arq: `--arq-round-trips`, its client and worker poll every 0.5 s): median and p99.

It prints one row per library, the medians over the passes, each with its ratio to the best
peer in that column (throughput: the highest; CPU and latency: the lowest), then checks that
the history holds every module job it enqueued, complete: a mismatch is an ERROR and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench._stack import (
    DEFAULT_DATABASE_URL,
    BenchError,
    Child,
    Stack,
    loop_name,
    percentile,
    private_stack,
    run,
)
from bench.peer_clients import LIBRARIES, PEERS, ClientOptions, Library, Module

SAMPLE_SECONDS = 0.005
COLUMNS = ("enqueue jobs/s", "no-op jobs/s", "worker CPU ms/job", "RT median ms", "RT p99 ms")
HIGHER_IS_BETTER = (True, True, False, False, False)
RATIO_AFTER = (0, 1, 2, 3)  # columns followed by their ratio to the best peer (RT: the median)


@dataclass(frozen=True)
class Options:
    jobs: int = 20_000
    passes: int = 3
    in_flight: int = 50
    round_trips: int = 500
    arq_round_trips: int = 40
    libraries: tuple[str, ...] = ("module", "module-batch", "saq", "taskiq", "arq")
    client: ClientOptions = field(default_factory=ClientOptions)
    database_url: str = DEFAULT_DATABASE_URL
    redis_server: str = "redis-server"
    keep: bool = False


@dataclass
class PassResult:
    enqueue_rate: float
    process_rate: float
    cpu_ms_per_job: float
    rt_median_ms: float
    rt_p99_ms: float

    def values(self) -> tuple[float, ...]:
        return (
            self.enqueue_rate,
            self.process_rate,
            self.cpu_ms_per_job,
            self.rt_median_ms,
            self.rt_p99_ms,
        )


def note(message: str) -> None:
    print(f"peers: {message}", file=sys.stderr, flush=True)


async def process_backlog(library: Library, worker: Child, jobs: int) -> tuple[float, float]:
    """Start the library's worker on the backlog; (jobs/s, CPU ms per job) while it drains."""
    worker.start()
    before = (time.perf_counter(), worker.cpu_seconds())
    deadline = time.monotonic() + 120 + jobs / 20
    while (left := await library.remaining()) == jobs:
        before = (time.perf_counter(), worker.cpu_seconds())
        worker.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{library.label}: the worker processed nothing")
        await asyncio.sleep(SAMPLE_SECONDS)
    while left > 0 or not await library.settled():
        worker.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{library.label}: {left} of {jobs} jobs not done in time")
        await asyncio.sleep(SAMPLE_SECONDS)
        left = await library.remaining()
    elapsed = time.perf_counter() - before[0]
    cpu = worker.cpu_seconds() - before[1]
    return jobs / elapsed, cpu * 1000 / jobs


async def round_trips(library: Library, count: int) -> list[float]:
    await library.round_trip()  # warm-up: connections, the worker's first wake-up
    times: list[float] = []
    for _ in range(count):
        began = time.perf_counter()
        await library.round_trip()
        times.append((time.perf_counter() - began) * 1000)
    return times


async def one_pass(library: Library, stack: Stack, options: Options) -> PassResult:
    await stack.flush_redis()
    await library.open()
    worker = stack.child(f"worker-{library.key}", library.worker_argv(), library.worker_env())
    try:
        began = time.perf_counter()
        await library.enqueue_all(options.jobs, options.in_flight)
        enqueue_rate = options.jobs / (time.perf_counter() - began)
        queued = await library.remaining()
        if queued != options.jobs:
            raise BenchError(f"{library.label}: {queued} jobs queued, expected {options.jobs}")
        process_rate, cpu_ms = await process_backlog(library, worker, options.jobs)
        count = options.arq_round_trips if library.key == "arq" else options.round_trips
        times = await round_trips(library, count)
    finally:
        await worker.stop()
        await library.close()
    return PassResult(
        enqueue_rate, process_rate, cpu_ms, statistics.median(times), percentile(times, 99)
    )


def ratios(rows: dict[str, tuple[float, ...]]) -> dict[str, list[float | None]]:
    """Each value over the best peer's in its column (None without peers)."""
    peers = [values for key, values in rows.items() if key in PEERS]
    result: dict[str, list[float | None]] = {}
    for key, values in rows.items():
        result[key] = []
        for column in range(len(COLUMNS)):
            column_values = [peer[column] for peer in peers]
            if not column_values:
                result[key].append(None)
                continue
            best = max(column_values) if HIGHER_IS_BETTER[column] else min(column_values)
            result[key].append(values[column] / best if best else None)
    return result


def format_table(labels: dict[str, str], rows: dict[str, tuple[float, ...]]) -> str:
    """library | enqueue jobs/s | x best | no-op jobs/s | x best | worker CPU ms/job | x best |
    RT median ms | RT p99 ms | x best (the ratio of the median)."""
    ratio = ratios(rows)
    header = ["library"]
    for column, name in enumerate(COLUMNS):
        header.append(name)
        if column in RATIO_AFTER:
            header.append("x best")
    lines = [header]
    for key, values in rows.items():
        cells = [labels[key]]
        for column, value in enumerate(values):
            digits = 0 if HIGHER_IS_BETTER[column] else 2
            cells.append(f"{value:.{digits}f}")
            if column in RATIO_AFTER:
                share = ratio[key][column]
                cells.append("-" if share is None else f"{share:.2f}")
        lines.append(cells)
    widths = [max(len(line[index]) for line in lines) for index in range(len(header))]
    rendered = [
        " | ".join(
            cell.ljust(width) if index == 0 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    rendered.insert(1, "-|-".join("-" * width for width in widths))
    return "\n".join(rendered)


def history_error(accepted: int, complete: int, rows: int) -> str | None:
    if accepted == complete == rows:
        return None
    return (
        f"the history holds {complete} complete module jobs ({rows} rows) of the {accepted}"
        " the benchmark enqueued"
    )


async def measure(options: Options) -> int:
    selected: list[type[Library]] = []
    for key in options.libraries:
        kind = LIBRARIES[key]
        reason = kind.missing()
        if reason is None:
            selected.append(kind)
        else:
            note(f"skipping {key}: {reason}")
    load_before = os.getloadavg()
    async with private_stack(
        database_server=options.database_url, redis_server=options.redis_server, keep=options.keep
    ) as stack:
        libraries = [kind(stack, options.client) for kind in selected]
        results: dict[str, list[PassResult]] = {library.key: [] for library in libraries}
        for number in range(1, options.passes + 1):
            for library in libraries:
                result = await one_pass(library, stack, options)
                results[library.key].append(result)
                shown = ", ".join(f"{v:.2f}" for v in result.values())
                note(f"pass {number}/{options.passes} {library.label}: {shown}")
        modules = [library for library in libraries if isinstance(library, Module)]
        accepted = sum(library.accepted for library in modules)
        complete, rows = await modules[0].history() if modules else (0, 0)
    medians = {
        key: tuple(
            statistics.median(values) for values in zip(*(r.values() for r in runs), strict=True)
        )
        for key, runs in results.items()
    }
    labels = {library.key: library.label for library in libraries}
    print(
        f"{options.jobs} no-op jobs a pass, {options.passes} pass(es), medians; enqueue:"
        f" {options.in_flight} in flight (module batches: {options.client.batch_in_flight});"
        f" one worker process at concurrency {options.client.concurrency}; clients on"
        f" {loop_name()}; load average {load_before[0]:.2f} before,"
        f" {os.getloadavg()[0]:.2f} after ({os.cpu_count()} CPUs)"
    )
    print(format_table(labels, medians))
    if options.client.module_wait == "wait":
        wait = "waits with ArqService.wait_for_result (woken by the job's channel)"
    elif options.client.module_wait == "stream":
        wait = "waits for the job's events (src.arq.streams.StreamHub), then get_job_result"
    else:
        wait = f"polls get_job_result every {options.client.client_poll * 1000:g} ms"
    print(
        f"module round trip: the client {wait}. taskiq's wait_result polls every"
        f" {options.client.client_poll * 1000:g} ms;"
        " saq's Job.refresh(until_complete) waits through pub/sub; arq's Job.result polls every"
        " 500 ms."
    )
    if not modules:
        return 0
    error = history_error(accepted, complete, rows)
    if error is not None:
        print(f"ERROR: history: {error}")
        return 1
    print(f"history: all {accepted} module jobs complete in the database")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers",
        description="The module against saq, taskiq and arq: enqueue, one worker's throughput"
        " and CPU, round trips; medians of alternating passes on one private Redis.",
    )
    defaults, client = Options(), ClientOptions()
    add = parser.add_argument
    add("--jobs", type=_positive, default=defaults.jobs, help="no-op jobs a pass")
    add("--passes", type=_positive, default=defaults.passes, help="passes (medians shown)")
    add("--concurrency", type=_positive, default=client.concurrency, help="worker jobs at once")
    add("--in-flight", type=_positive, default=defaults.in_flight, help="enqueue calls at once")
    add("--batch-size", type=_positive, default=client.batch_size, help="module batch size")
    add("--batch-in-flight", type=_positive, default=client.batch_in_flight)
    add("--round-trips", type=_positive, default=defaults.round_trips)
    add("--arq-round-trips", type=_positive, default=defaults.arq_round_trips)
    add("--client-poll", type=float, default=client.client_poll, help="seconds (polling waits)")
    add("--module-wait", choices=("wait", "stream", "poll"), default=client.module_wait)
    add(
        "--libraries",
        default=",".join(defaults.libraries),
        help=f"comma-separated, of: {', '.join(LIBRARIES)}",
    )
    add("--database-url", default=defaults.database_url, help="a PostgreSQL server to use")
    add("--redis-server", default=defaults.redis_server)
    add("--keep", action="store_true", help="keep the workers' logs")
    args = parser.parse_args(argv)
    libraries = tuple(name.strip() for name in args.libraries.split(",") if name.strip())
    unknown = [name for name in libraries if name not in LIBRARIES]
    if unknown or not libraries:
        parser.error(f"--libraries: unknown {unknown}; choose from {', '.join(LIBRARIES)}")
    if shutil.which(args.redis_server) is None:
        parser.error(f"--redis-server: {args.redis_server!r} not found")
    if args.client_poll <= 0:
        parser.error("--client-poll must be > 0")
    return Options(
        jobs=args.jobs,
        passes=args.passes,
        in_flight=args.in_flight,
        round_trips=args.round_trips,
        arq_round_trips=args.arq_round_trips,
        libraries=libraries,
        client=ClientOptions(
            concurrency=args.concurrency,
            batch_size=args.batch_size,
            batch_in_flight=args.batch_in_flight,
            client_poll=args.client_poll,
            module_wait=args.module_wait,
        ),
        database_url=args.database_url,
        redis_server=args.redis_server,
        keep=args.keep,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        return run(measure(options))
    except BenchError as exc:
        print(f"ERROR: {exc}")
        return 1
    except KeyboardInterrupt:
        print("peers: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
