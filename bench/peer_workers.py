"""The peers' no-op task and their worker settings, for bench/peers.py.

Each peer's worker is started with that library's own command (bench/peers.py does it):

    saq bench.peer_workers.saq_settings
    taskiq worker bench.peer_workers:taskiq_broker --workers 1 --max-async-tasks 100
    arq bench.peer_workers.ArqWorkerSettings

configured through `BENCH_REDIS_URL` and `BENCH_CONCURRENCY`. The workers of saq and arq run on
uvloop (their commands use asyncio's default loop policy, set here on import); taskiq's command
uses uvloop by itself when it is installed. redis-py parses with hiredis when it is installed.
Nothing here imports a peer before it is asked for, so a missing peer breaks only its own row.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

NOOP = "noop"
TASKIQ_QUEUE = "bench-taskiq"


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def _concurrency() -> int:
    return int(os.environ.get("BENCH_CONCURRENCY", "100"))


async def noop(ctx: Any) -> None:
    """The no-op job of saq and arq (they pass a context)."""


def saq_settings() -> dict[str, Any]:
    """`saq bench.peer_workers.saq_settings`: saq's worker settings."""
    from saq import Queue

    _use_uvloop()
    return {
        "queue": Queue.from_url(_redis_url()),
        "functions": [(NOOP, noop)],
        "concurrency": _concurrency(),
    }


def build_taskiq(url: str) -> tuple[Any, Any]:
    """taskiq's broker (a Redis stream, results in Redis) and its no-op task."""
    from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

    broker = RedisStreamBroker(url, queue_name=TASKIQ_QUEUE).with_result_backend(
        RedisAsyncResultBackend(url)
    )

    async def taskiq_noop() -> None:
        """The no-op job of taskiq."""

    return broker, broker.register_task(taskiq_noop, task_name=NOOP)


def _arq_settings() -> type:
    from arq.connections import RedisSettings
    from arq.worker import func

    _use_uvloop()
    return type(
        "ArqWorkerSettings",
        (),
        {
            "functions": [func(noop, name=NOOP)],
            "redis_settings": RedisSettings.from_dsn(_redis_url()),
            "max_jobs": _concurrency(),
        },
    )


def __getattr__(name: str) -> Any:
    # Built when a worker command asks for them (PEP 562), with that process' environment.
    if name == "taskiq_broker":
        broker, _ = build_taskiq(_redis_url())
        globals()[name] = broker
        return broker
    if name == "ArqWorkerSettings":
        settings = _arq_settings()
        globals()[name] = settings
        return settings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
