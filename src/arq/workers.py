"""What each live worker announces with its heartbeat: host, jobs running, its schedules' next runs.

A worker's heartbeat (`src.arq.worker`) stores its state under `keys.worker_state` for three
heartbeats, so a killed worker's state lapses on its own; `live_workers` reads the states of the
workers whose heartbeat is recent (the dashboard's overview shows them).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis
from arq.utils import to_unix_ms

from src.arq import keys
from src.arq.outcome import ms_to_datetime

# The worker context's entry that describes the worker (set by `JobWorker`).
WORKER_STATE = "worker_state"
# A state outlives its heartbeat (every 5 s) by two beats, as a worker counts as live
# (`src.arq.service.WORKER_LIVE_SECONDS`).
STATE_TTL_S = 15.0


@dataclass(frozen=True, slots=True)
class LiveWorker:
    """A worker with a heartbeat in the last `live_ms`."""

    worker_id: str
    last_heartbeat: datetime
    host: str | None = None
    pid: int | None = None
    running: int | None = None  # jobs it runs now (None: a worker that does not say)
    # Schedule (cron job) name -> its next run, as this worker's ARQ timing has it.
    schedules: dict[str, datetime] = field(default_factory=dict)


def describe(worker: Any) -> dict[str, Any]:
    """The state of an ARQ worker (`JobWorker`): jobs running and the next run of each schedule."""
    return {
        "running": sum(not task.done() for task in worker.tasks.values()),
        "schedules": {
            job.name: to_unix_ms(job.next_run) for job in worker.cron_jobs if job.next_run
        },
    }


async def announce(redis: ArqRedis, queue_name: str, worker_id: str, state: dict[str, Any]) -> None:
    """Store one heartbeat's state of the worker `worker_id` (it lapses after three beats)."""
    body = {"host": socket.gethostname(), "pid": os.getpid(), **state}
    await redis.set(
        keys.worker_state(queue_name, worker_id), json.dumps(body), px=int(STATE_TTL_S * 1000)
    )


async def live_workers(redis: ArqRedis, queue_name: str, *, live_ms: int) -> list[LiveWorker]:
    """The workers with a heartbeat in the last `live_ms`, most recent beat first."""
    now_ms = int(time.time() * 1000)
    beats = await redis.zrevrangebyscore(
        keys.workers_set(queue_name), "+inf", now_ms - live_ms, withscores=True
    )
    if not beats:
        return []
    ids = [member.decode() if isinstance(member, bytes) else str(member) for member, _ in beats]
    states = await redis.mget([keys.worker_state(queue_name, worker_id) for worker_id in ids])
    found = []
    for worker_id, (_, score), raw in zip(ids, beats, states, strict=True):
        state = _parse(raw)
        schedules = state.get("schedules")
        running = state.get("running")
        pid = state.get("pid")
        found.append(
            LiveWorker(
                worker_id=worker_id,
                last_heartbeat=ms_to_datetime(int(score)),
                host=str(state["host"]) if state.get("host") else None,
                pid=pid if isinstance(pid, int) else None,
                running=running if isinstance(running, int) else None,
                schedules={
                    str(name): ms_to_datetime(int(at))
                    for name, at in (schedules.items() if isinstance(schedules, dict) else ())
                    if isinstance(at, int | float)
                },
            )
        )
    return found


def _parse(raw: bytes | str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
