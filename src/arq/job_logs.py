"""What every log line of a job's run carries (`src.logs`): the job's id, task, try and owner, the
worker's id and the id of the request that queued the job (in the job's payload, see
`src.arq.queue.job_payload`), ARQ's own lines ("→", "←") included.

A `JobWorker` runs each job in the job's own asyncio task and binds them there: the job's and the
worker's id at once (`bind_run`), the task, owner and request id once the run has read the
payload, with the try (`run_fields`). The task's own asyncio task starts with a copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import Token
from typing import Any

from src import logs

# The worker context's logging set-up (a callable), run before the worker's first line.
CONFIGURE_LOGGING = "configure_logging"


def bind_run(job_id: str, worker_id: str | None) -> Token[Mapping[str, object]]:
    """Start the log fields of a job's run: its id and the worker's, nothing of another job."""
    fresh = dict.fromkeys(logs.CONTEXT_FIELDS)
    return logs.bind({**fresh, "job_id": job_id, "worker_id": worker_id})


def run_fields(payload: Mapping[str, Any] | None, job_try: int | None = None) -> dict[str, Any]:
    """The log fields a run binds once it has read its job's payload: the task, owner and
    request id (None for what the payload lacks) and, if given, the try."""
    payload = payload or {}
    fields: dict[str, Any] = {
        field: value if isinstance(value, str) and value else None
        for field, value in (
            ("task", payload.get("f")),
            ("owner", payload.get("owner")),
            ("request_id", payload.get("request_id")),
        )
    }
    if job_try is not None:
        fields["try"] = job_try
    return fields
