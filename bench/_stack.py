"""What the load benchmarks (bench/peers.py, bench/http_load.py) share: a private stack (a
redis-server and a migrated PostgreSQL database of their own, from bench/chaos.py), child
processes started as operators start them (the `arq`, `saq`, `taskiq` and `uvicorn` commands)
with their CPU time, percentiles and the event loop.

Child processes run in the stack's own directory (a developer's ./.env must not reach them) with
the repository on PYTHONPATH; the environment passes through otherwise, so `ARQ_*` settings given
to a benchmark reach the module's worker and API (to measure what a setting trades).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from redis.asyncio import Redis

from bench.chaos import DEFAULT_DATABASE_URL, PrivateRedis, free_port, private_database

__all__ = [
    "BIN",
    "DEFAULT_DATABASE_URL",
    "ROOT",
    "BenchError",
    "Child",
    "Stack",
    "free_port",
    "module_env",
    "percentile",
    "private_stack",
    "run",
]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the virtualenv's commands: arq, saq, taskiq, uvicorn
STOP_SECONDS = 15.0
T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark could not measure (a process died, a deadline passed)."""


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when it is installed (the clients of every library share it)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (`share` in 0..100) of `values`."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(share / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def child_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def module_env(*, redis_url: str, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of the module's worker and API on the private stack."""
    return child_env(REDIS_URL=redis_url, DATABASE_URL=database_url, **extra)


def _cpu_seconds_psutil(pid: int) -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    try:
        process = psutil.Process(pid)
        total = 0.0
        for each in [process, *process.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = each.cpu_times()
                total += times.user + times.system
        return total
    except psutil.NoSuchProcess:
        return math.nan


def _cpu_seconds_proc(pid: int) -> float:
    """user + system time of `pid` and its descendants, from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, todo, seen = 0.0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{current}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children so far (psutil, else /proc)."""
    measured = _cpu_seconds_psutil(pid)
    return _cpu_seconds_proc(pid) if measured is None else measured


class Child:
    """A command run as its operators run it, its output in a log file of the stack."""

    def __init__(self, name: str, argv: Sequence[str], *, env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.cwd = cwd
        self.log_path = cwd / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Child:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the benchmark reaches it through `stop` only
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(
                f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
            return "\n".join(f"  {self.name}| {line}" for line in text)
        return ""

    async def stop(self) -> None:
        """SIGTERM (a graceful stop for every one of them), SIGKILL after STOP_SECONDS."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, STOP_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await asyncio.to_thread(process.wait, STOP_SECONDS)
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class Stack:
    """A private redis-server and database, and the directory the children run in."""

    directory: Path
    redis_url: str
    database_url: str

    async def flush_redis(self) -> None:
        client = Redis.from_url(self.redis_url)
        try:
            await client.flushall()
        finally:
            await client.aclose()

    def child(self, name: str, argv: Sequence[str], env: dict[str, str]) -> Child:
        return Child(name, argv, env=env, cwd=self.directory)


@asynccontextmanager
async def private_stack(
    *, database_server: str, redis_server: str = "redis-server", keep: bool = False
) -> AsyncIterator[Stack]:
    """A redis-server on a free port (nothing on disk) and a migrated database
    `vkp_chaos_<random>` on `database_server`; both gone at the end, and the directory with the
    children's logs too unless `keep` (or the block failed: then it is kept and named)."""
    if shutil.which(redis_server) is None:
        raise BenchError(f"{redis_server!r} not found: install Redis (apt-get install redis)")
    directory = Path(tempfile.mkdtemp(prefix="vkp_bench_"))
    failed = True
    try:
        async with AsyncExitStack() as exits:
            redis = PrivateRedis(redis_server, directory)
            exits.push_async_callback(redis.kill)
            await redis.start()
            database_url = await exits.enter_async_context(private_database(database_server))
            yield Stack(directory, redis.url, database_url)
        failed = False
    finally:
        if keep or failed:
            print(f"bench: logs kept in {directory}", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    *,
    within: float,
    what: str,
    child: Child | None = None,
) -> None:
    """Until `check()` (an async callable) is true; BenchError after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(OSError, TimeoutError):
            if await check():
                return
        if child is not None:
            child.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not happen within {within:g} s")
        await asyncio.sleep(0.1)
