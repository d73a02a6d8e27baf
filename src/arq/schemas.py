"""Statuses, priorities and the shapes the job API speaks."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from src.breakers import CircuitState
from src.schemas import MAX_OFFSET as MAX_OFFSET
from src.schemas import Page

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
# A dependency: a job id, or `$N`, the job at position N earlier in the same batch.
DEPENDENCY_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}|\$[0-9]{1,4})$"
MAX_DEPENDENCIES = 100
# The rules of `depends_on` the schema cannot state, as a 422's `errors[].msg` says them.
UNKNOWN_DEPENDENCY_RULE = "no job you may see has this id"
LATER_DEPENDENCY_RULE = "must name a job earlier in the batch"


def check_webhook_url(value: str) -> str:
    """A completion webhook's URL, stripped; `ValueError` saying what is wrong with it. Where
    it may point is checked when it is sent (`send_notification` refuses private addresses)."""
    value = value.strip()
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials (user:password@)")
    return value


class JobStatus(StrEnum):
    WAITING = "waiting"  # blocked by dependencies (`depends_on`) that have not completed
    QUEUED = "queued"
    DEFERRED = "deferred"
    IN_PROGRESS = "in_progress"
    RETRYING = "retrying"
    COMPLETE = "complete"
    FAILED = "failed"
    ABORTED = "aborted"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES = frozenset({JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.ABORTED})
ACTIVE_STATUSES = frozenset(set(JobStatus) - FINISHED_STATUSES)


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


class JobError(BaseModel):
    type: str
    message: str


DependencyFailurePolicy = Literal["fail", "run"]


class EnqueueRequest(BaseModel):
    """One job to run: a registered task name and its arguments."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"function_name": "ping", "kwargs": {"message": "hello"}},
                {"function_name": "ping", "args": ["hello"], "job_id": "ping-1", "defer_by": 30},
            ]
        },
    )

    function_name: str = Field(min_length=1, max_length=100, description="a registered task")
    args: list[Any] = Field(default_factory=list, description="positional arguments, in order")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments")
    job_id: str | None = Field(
        None,
        pattern=JOB_ID_PATTERN,
        description="your id for the job (idempotency key); a new one is made if absent",
    )
    defer_by: float | None = Field(
        None, ge=0, le=30 * 86400, description="seconds to wait before running"
    )
    defer_until: datetime | None = Field(None, description="ISO time to run at (with a timezone)")
    priority: Priority = Field(
        Priority.NORMAL, description="ready jobs run highest priority first, FIFO within one"
    )
    notify_url: str | None = Field(
        None,
        max_length=2048,
        description=(
            "completion webhook: when the job finishes, its status and result (or error) are"
            " POSTed here as JSON (`job_finished`) by a `send_notification` job; private,"
            " loopback and link-local addresses are refused when it is sent"
        ),
        examples=["https://example.org/hooks/jobs"],
    )
    notify_secret: str | None = Field(
        None,
        min_length=16,
        max_length=256,
        pattern=r"^[^\x00]*$",  # stored in PostgreSQL text, which cannot hold NUL
        description="HMAC-SHA256 key: the webhook carries an X-Signature (never shown back)",
    )

    depends_on: list[Annotated[str, Field(pattern=DEPENDENCY_PATTERN)]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_DEPENDENCIES,
        description=(
            "jobs that must complete first, each once: the job waits (`waiting`, with"
            " `blocked_by`) until every one has completed, then queues with its own priority."
            " Each is the id of a job you may see (as the answer gave it, or the id you chose),"
            " or, in a batch, an earlier job's id or `$N`, the job at position N of the batch."
            f" Rules the schema cannot state (a 422 names the item): {UNKNOWN_DEPENDENCY_RULE}"
            f" (another user's job is answered the same); `$N` {LATER_DEPENDENCY_RULE}."
        ),
        examples=[["$0"]],
        json_schema_extra={"uniqueItems": True},
    )
    on_dependency_failure: DependencyFailurePolicy = Field(
        "fail",
        description=(
            "when a dependency fails or is aborted: `fail` ends this job `failed` with"
            " `DependencyFailed` naming it; `run` runs it once every dependency has ended"
        ),
    )

    @field_validator("notify_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        return None if value is None else check_webhook_url(value)

    @field_validator("depends_on")
    @classmethod
    def _each_once(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("name each dependency once")
        return value

    @model_validator(mode="after")
    def _one_defer(self) -> Self:
        if self.defer_by is not None and self.defer_until is not None:
            raise ValueError("give defer_by or defer_until, not both")
        if self.defer_until is not None and self.defer_until.tzinfo is None:
            raise ValueError("defer_until needs a timezone, e.g. 2026-01-01T12:00:00Z")
        if self.notify_secret is not None and self.notify_url is None:
            raise ValueError("notify_secret needs a notify_url")
        return self


class EnqueueResponse(BaseModel):
    job_id: str
    function: str
    status: JobStatus
    status_url: str
    result_url: str


class JobAcceptedData(BaseModel):
    job_id: str
    function: str
    status_url: str
    result_url: str
    params: dict[str, Any]


class JobAcceptedResponse(BaseModel):
    """A queued analysis job (the seed's shape, with the job's parameters)."""

    success: bool = True
    message: str
    data: JobAcceptedData


class JobStatusResponse(BaseModel):
    """Where a job stands."""

    job_id: str
    function: str
    status: JobStatus
    priority: Priority = Priority.NORMAL
    progress: int = Field(ge=0, le=100)
    message: str | None = None
    tries: int
    enqueued_at: datetime
    scheduled_for: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Any | None = None
    error: JobError | None = None
    aborted_by: str | None = None
    abort_requested_at: datetime | None = None
    attempts: list[dict[str, Any]] = Field(
        default_factory=list, description="earlier rounds of a job re-queued after failing"
    )
    notify_url: str | None = Field(None, description="the completion webhook, if one was asked")
    notification_job_id: str | None = Field(
        None, description="the `send_notification` job carrying the completion webhook"
    )
    request_id: str | None = Field(
        None,
        description="the X-Request-ID of the request that queued it (null if none did)",
    )
    depends_on: list[str] = Field(
        default_factory=list, description="the jobs it waits for (their stored ids)"
    )
    blocked_by: list[str] = Field(
        default_factory=list,
        description="those of `depends_on` that have not completed yet (while it is `waiting`)",
    )
    on_dependency_failure: DependencyFailurePolicy | None = Field(
        None, description="what a failed dependency does to it (null: it has none)"
    )


class JobResultResponse(BaseModel):
    job_id: str
    function: str
    status: JobStatus
    success: bool
    result: Any | None = None
    error: JobError | None = None
    finished_at: datetime | None = None


class JobSummary(BaseModel):
    job_id: str
    function: str
    owner: str
    status: JobStatus
    priority: Priority = Priority.NORMAL
    progress: int
    message: str | None = None
    tries: int
    enqueued_at: datetime
    finished_at: datetime | None = None
    error: JobError | None = None


class JobPage(Page[JobSummary]):
    pass


class QueueInfo(BaseModel):
    queue_name: str
    queued: int
    deferred: int
    in_progress: int
    waiting: int = Field(0, description="jobs waiting for their dependencies (not in Redis yet)")
    by_function: dict[str, int]
    workers: int
    completed_last_hour: int
    failed_last_hour: int


class HealthQueueInfo(BaseModel):
    queue_name: str
    queued_jobs_count: int | None


class CircuitBreakerHealth(BaseModel):
    """A circuit breaker of a service the jobs call (packages add theirs): `closed` lets calls
    through, `open` refuses them until `open_until` (jobs wait), `half_open` lets one probe call
    decide. A group of circuits (one per webhook host and owner) shows its worst state, how many
    are open or half-open, and no host: the health needs no credential."""

    name: str
    state: CircuitState
    failures: int | None = Field(None, description="failed calls in a row (one circuit)")
    open_until: datetime | None = None
    circuits: int | None = Field(None, description="a group: its open or half-open circuits")


class HealthDetails(BaseModel):
    redis_connected: bool
    database_connected: bool
    workers: int | None
    queue_info: HealthQueueInfo
    circuit_breakers: list[CircuitBreakerHealth] = Field(default_factory=list)


class HealthResponse(BaseModel):
    service: str = "ARQ"
    healthy: bool
    timestamp: datetime
    details: HealthDetails


class TaskInfo(BaseModel):
    name: str
    description: str
    role: str
    timeout: float | None
    max_tries: int | None
    args_schema: dict[str, Any]


# -- queue statistics (`GET /stats`) -----------------------------------------------------------

STATS_DEFAULT_HOURS = 24  # the window when `since` is not given: this long before `until`
STATS_MAX_DAYS = 366  # the widest window: a year of history, leap day included


class StatusCounts(BaseModel):
    """Jobs by their status now."""

    waiting: int = 0
    queued: int = 0
    deferred: int = 0
    in_progress: int = 0
    retrying: int = 0
    complete: int = 0
    failed: int = 0
    aborted: int = 0


class DurationStats(BaseModel):
    """Percentiles of a duration in seconds (linear interpolation, as PostgreSQL's
    `percentile_cont`); null without a sample."""

    samples: int = Field(description="the jobs measured")
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class JobStats(BaseModel):
    """What became of the jobs enqueued in the window."""

    jobs: int = Field(description="jobs enqueued in the window")
    statuses: StatusCounts
    success_rate: float | None = Field(
        description="complete / finished (complete, failed or aborted); null when none finished"
    )
    run_seconds: DurationStats = Field(
        description="finished_at - started_at of the finished jobs that ran (of the last try)"
    )
    wait_seconds: DurationStats = Field(
        description="started_at - the later of enqueued_at and scheduled_for, of the jobs that "
        "started (of the last try; a job waiting for its next try is left out; never below 0)"
    )
    retried_jobs: int = Field(description="jobs that ran more than once (tries > 1)")
    extra_tries: int = Field(description="tries past the first, all jobs together")


class TaskStats(JobStats):
    function: str


class QueueStats(BaseModel):
    """Statistics of the jobs enqueued in [since, until), per task and over all of them."""

    since: datetime
    until: datetime
    owner: str | None = Field(description="whose jobs: null for everyone's (admins only)")
    function: str | None = Field(description="the task asked for, if one was")
    tasks: list[TaskStats] = Field(description="one entry per task with jobs, by name")
    total: JobStats
