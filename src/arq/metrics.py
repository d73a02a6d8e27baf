"""The job module's Prometheus metrics, counted from the job lifecycle events of this process.

An event is published once, by the process that records the change, so each process counts what
it did and a scrape of every API process and worker adds up to the whole: enqueues on the API
(and on workers for schedules and webhooks), starts, endings, retries and re-runs on the worker
that recorded them. Labels are bounded: `task` is a task name from the registry (never an id or
an owner).

    jobs.events.subscribe(count_events)  # done for every ArqService
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Histogram

from src.arq.events import EventKind, JobEvent
from src.arq.schemas import JobStatus

# Seconds: from a no-op (milliseconds) to a long parse or a backup (an hour).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)

JOBS_ENQUEUED = Counter(
    "vkp_jobs_enqueued", "Jobs queued: new, retried by a user, or queued again", ["task"]
)
JOBS_STARTED = Counter("vkp_jobs_started", "Tries started by a worker", ["task"])
JOBS_COMPLETED = Counter("vkp_jobs_completed", "Jobs that ended complete", ["task"])
JOBS_FAILED = Counter(
    "vkp_jobs_failed", "Jobs that ended failed (out of tries, or an error)", ["task"]
)
JOBS_RETRIED = Counter(
    "vkp_jobs_retried", "Tries that ended with the job waiting to run again", ["task"]
)
JOBS_ABORTED = Counter("vkp_jobs_aborted", "Jobs that ended aborted on request", ["task"])
JOBS_LOST = Counter(
    "vkp_jobs_lost",
    "Jobs queued again to re-run because their worker was lost (killed, lease lapsed)",
    ["task"],
)
JOB_DURATION = Histogram(
    "vkp_job_duration_seconds",
    "Run time of a job's last try, by task",
    ["task"],
    buckets=DURATION_BUCKETS,
)
JOB_QUEUE_WAIT = Histogram(
    "vkp_job_queue_wait_seconds",
    "Time from when a try was due (queued, deferral or retry delay over) to its start",
    ["task"],
    buckets=WAIT_BUCKETS,
)
HISTORY_BATCH = Histogram(
    "vkp_history_write_batch_size",
    "Records (starts, endings) a worker writes to the job history in one transaction",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
HISTORY_LAG = Histogram(
    "vkp_history_write_lag_seconds",
    "Time from a job's start or ending to its record in the job history",
    buckets=WAIT_BUCKETS,
)

_ENDINGS = {
    JobStatus.COMPLETE: JOBS_COMPLETED,
    JobStatus.FAILED: JOBS_FAILED,
    JobStatus.ABORTED: JOBS_ABORTED,
}


async def count_events(events: Sequence[JobEvent]) -> None:
    """Count a batch of this process' job events."""
    for event in events:
        task = event.function or "unknown"
        if event.kind is EventKind.ENQUEUED:
            JOBS_ENQUEUED.labels(task).inc()
            if event.lost:
                JOBS_LOST.labels(task).inc()
        elif event.kind is EventKind.STARTED:
            JOBS_STARTED.labels(task).inc()
            if event.queue_wait_seconds is not None:
                JOB_QUEUE_WAIT.labels(task).observe(event.queue_wait_seconds)
        elif event.kind is EventKind.RETRYING:
            JOBS_RETRIED.labels(task).inc()
        elif event.ends and event.status is not None:
            _ENDINGS[event.status].labels(task).inc()
            if event.duration_seconds is not None:
                JOB_DURATION.labels(task).observe(event.duration_seconds)


def record_history_write(records: int, oldest_age_seconds: float) -> None:
    """A worker wrote `records` to the history; the oldest had waited this long."""
    HISTORY_BATCH.observe(records)
    HISTORY_LAG.observe(max(0.0, oldest_age_seconds))
