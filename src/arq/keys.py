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


def rate_limit(owner: str, window: int) -> str:
    """Counter of jobs `owner` enqueued in the minute `window`."""
    return f"{MODULE_PREFIX}:rate:{owner}:{window}"
