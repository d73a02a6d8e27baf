"""Errors of the job module."""

from __future__ import annotations

from typing import Any

from src.exceptions import AppError


class ArqError(AppError):
    status_code = 400


class JobNotFound(ArqError):
    status_code = 404

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found")


class JobConflict(ArqError):
    """The job id is taken, or the job is in a state that forbids the action."""

    status_code = 409


class UnknownTask(ArqError):
    status_code = 422

    def __init__(self, name: str, known: list[str], *, loc: str = "function_name") -> None:
        super().__init__(
            f"unknown task {name!r}; known tasks: {', '.join(known)}",
            errors=[{"loc": [loc], "msg": f"unknown task {name!r}", "type": "unknown_task"}],
            known_tasks=known,
        )


class InvalidJobArguments(ArqError):
    """A task's arguments failed validation; `errors` names each field and why."""

    status_code = 422

    def __init__(self, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail, errors=errors)


class TaskForbidden(ArqError):
    status_code = 403


class RateLimited(ArqError):
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"enqueue rate limit reached; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


class StreamLimitReached(ArqError):
    """The caller already holds as many open status streams as one owner may."""

    status_code = 429

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            f"at most {limit} open status streams per owner; close one or retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
            limit=limit,
        )


class StreamCapacityReached(ArqError):
    """This API process serves as many status streams as it may; another process may not."""

    status_code = 503

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            f"this server holds its maximum of {limit} open status streams; retry in "
            f"{retry_after} s",
            headers={"Retry-After": str(retry_after)},
            limit=limit,
        )


class RetryLater(Exception):
    """Raised by a task for a transient failure: the job runs again after a backoff.

    `raise RetryLater("VK answered 'too many requests'")` waits `ARQ_RETRY_BACKOFF` seconds,
    doubling each try up to `ARQ_RETRY_BACKOFF_MAX`, with jitter; `defer=` overrides the wait.
    Past the job's tries it fails with `GaveUp` and the reason. `keep_try=True`: the run did
    not count (a service the job needs is known to be down, say: its circuit breaker is open),
    so it runs again without spending one of its tries; give `defer`, the wait.
    """

    def __init__(self, reason: str, *, defer: float | None = None, keep_try: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.defer = defer
        self.keep_try = keep_try


class GaveUp(Exception):
    """A task kept asking to be retried until it ran out of tries."""
