"""Redis key names used by the module besides ARQ's own (`arq:job:<id>` and friends)."""

from __future__ import annotations

from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)

__all__ = [
    "abort_jobs_ss",
    "in_progress_key_prefix",
    "job_key_prefix",
    "result_key_prefix",
    "retry_key_prefix",
]

MODULE_PREFIX = "vkp:arq"


def running_set(queue_name: str) -> str:
    """ZSET of the ids of jobs running now (score: start time in ms)."""
    return f"{MODULE_PREFIX}:running:{queue_name}"


def workers_set(queue_name: str) -> str:
    """ZSET of live worker ids (score: last heartbeat in ms)."""
    return f"{MODULE_PREFIX}:workers:{queue_name}"


def worker_state(queue_name: str, worker_id: str) -> str:
    """JSON a live worker stores with each heartbeat (`src.arq.workers`); lapses on its own."""
    return f"{MODULE_PREFIX}:worker:{queue_name}:{worker_id}"


def rate_limit(owner: str, window: int) -> str:
    """Counter of jobs `owner` enqueued in the minute `window`."""
    return f"{MODULE_PREFIX}:rate:{owner}:{window}"


def wake_channel(queue_name: str) -> str:
    """Pub/sub channel that wakes idle workers when jobs are queued."""
    return f"{MODULE_PREFIX}:wake:{queue_name}"


def deferred_set(queue_name: str) -> str:
    """ZSET of deferred jobs to promote to their priority when due (score: run time in ms)."""
    return f"{MODULE_PREFIX}:deferred:{queue_name}"


def priority_offsets(queue_name: str) -> str:
    """HASH job id -> score offset of its priority, for deferred jobs awaiting promotion."""
    return f"{MODULE_PREFIX}:offsets:{queue_name}"


def job_events(job_id: str) -> str:
    """Pub/sub channel announcing a change of one job (status, progress)."""
    return f"{MODULE_PREFIX}:events:{job_id}"


def reconcile_lock(queue_name: str) -> str:
    """Held by the one worker reconciling the history with Redis."""
    return f"{MODULE_PREFIX}:reconcile-lock:{queue_name}"


def missing_since(queue_name: str) -> str:
    """ZSET of running jobs whose lease was found missing (score: first seen missing, ms)."""
    return f"{MODULE_PREFIX}:missing:{queue_name}"


def fair_clocks(queue_name: str) -> str:
    """HASH `owner|priority` -> the virtual time (ms) up to which that owner's backlog reaches."""
    return f"{MODULE_PREFIX}:fair:{queue_name}"
