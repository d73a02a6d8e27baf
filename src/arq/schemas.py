"""Statuses, priorities and the shapes the job API speaks."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
# Paging deeper than this is a scan nobody needs; the bound also keeps OFFSET within BIGINT.
MAX_OFFSET = 1_000_000_000


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

    @field_validator("notify_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        return None if value is None else check_webhook_url(value)

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


class JobPage(BaseModel):
    items: list[JobSummary]
    total: int
    limit: int
    offset: int


class QueueInfo(BaseModel):
    queue_name: str
    queued: int
    deferred: int
    in_progress: int
    by_function: dict[str, int]
    workers: int
    completed_last_hour: int
    failed_last_hour: int


class HealthQueueInfo(BaseModel):
    queue_name: str
    queued_jobs_count: int | None


class HealthDetails(BaseModel):
    redis_connected: bool
    database_connected: bool
    workers: int | None
    queue_info: HealthQueueInfo


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
