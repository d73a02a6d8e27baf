"""Worker and queue settings (`ARQ_` prefix)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from src.arq.schemas import Priority


class ArqSettings(BaseSettings):
    """How workers run jobs and how the API queues them."""

    model_config = SettingsConfigDict(env_prefix="ARQ_", env_file=".env", extra="ignore")

    max_jobs: int = Field(10, ge=1, le=10_000, description="jobs one worker runs at once")
    job_timeout: float = Field(300, gt=0, description="seconds a job may run, unless its task says")
    max_tries: int = Field(3, ge=1, le=100, description="runs per job, retries included")
    poll_delay: float = Field(0.5, gt=0, le=60, description="seconds between queue polls")
    queue_name: str = Field("arq:queue", min_length=1, max_length=200)
    burst_mode: bool = Field(False, description="worker exits when the queue is empty")
    # The job history in the database keeps results for good; this is Redis' copy only.
    keep_result: int = Field(3600, ge=1, description="seconds ARQ keeps a result in Redis")
    health_check_interval: int = Field(
        30, ge=1, le=3600, description="seconds between health marks"
    )
    enqueue_rate_limit: int = Field(
        600, ge=0, description="jobs one owner may enqueue per minute (0 = no limit)"
    )
    batch_limit: int = Field(1000, ge=1, le=10_000, description="jobs in one enqueue-batch call")
    abort_wait: float = Field(3.0, ge=0, le=30, description="seconds abort waits for a running job")
    lease: float = Field(
        15, ge=2, le=600, description="seconds a running job's lease lasts; renewed while it runs"
    )
    # Bounded so that scores (ready time minus up to three agings) stay far above zero.
    priority_aging: float = Field(
        3600, gt=0, le=30 * 86400, description="seconds of waiting that outweigh one priority level"
    )
    user_max_priority: Priority = Field(
        Priority.HIGH, description="the highest priority a user (not an admin) may ask for"
    )
    # Fair share between owners at equal priority: an owner's k-th job queued in a burst sorts
    # as if queued k x step later (never more than half an aging), so one owner's flood does not
    # hold back another owner's jobs. 0 turns it off (plain FIFO within a priority).
    fairness_step: float = Field(
        0.1, ge=0, le=60, description="seconds one owner's queued job pushes their next one back"
    )
    wake_on_enqueue: bool = Field(True, description="wake idle workers through Redis on enqueue")
    reconcile_interval: float = Field(
        30, ge=0.2, le=3600, description="seconds between history/Redis reconciliations"
    )
    retry_backoff: float = Field(1.0, gt=0, description="first retry delay in seconds (doubles)")
    retry_backoff_max: float = Field(300, gt=0, description="longest retry delay in seconds")
    # The start ("→") and finish ("←") line of every run: two lines a job, a share of a worker's
    # time under load. At DEBUG (with LOG_LEVEL above it) they are neither built nor written;
    # failures, retries and aborts are logged whatever this says.
    job_log_level: Literal["INFO", "DEBUG"] = Field(
        "INFO", description="level of each job's start and finish log lines"
    )
    # Off by default: a worker waits out a Redis outage and carries on; liveness comes from
    # `arq --check` (the health key) and the heartbeat. Set, the worker exits (an error) once
    # Redis has been unreachable this long, so an orchestrator's restart-on-exit takes over.
    redis_outage_exit_after: float | None = Field(
        None, gt=0, le=86_400, description="seconds of Redis outage after which a worker exits"
    )

    @model_validator(mode="after")
    def _check_lease(self) -> Self:
        # A lease must outlive the longest pause between two looks at the queue.
        if self.poll_delay >= self.lease:
            raise ValueError(
                f"ARQ_POLL_DELAY ({self.poll_delay} s) must be shorter than ARQ_LEASE "
                f"({self.lease} s)"
            )
        return self

    @classmethod
    def defaults(cls) -> ArqSettings:
        """The settings' defaults, whatever the environment says (for a worker built without
        settings: its arguments alone decide how it behaves, as with ARQ's `Worker`)."""
        return cls.model_construct()

    @property
    def batch_max_jobs(self) -> int:
        """Jobs one batch may hold: ARQ_BATCH_LIMIT, and no more than a minute's enqueue budget
        (a larger batch could never pass the rate limit)."""
        if self.enqueue_rate_limit:
            return min(self.batch_limit, self.enqueue_rate_limit)
        return self.batch_limit

    @property
    def fairness_cap_seconds(self) -> float:
        """The most an owner's backlog pushes their next job back: half a priority level, so
        priorities stay strict between jobs queued close together."""
        return self.priority_aging / 2 if self.fairness_step > 0 else 0.0

    # -- live streams
    # Counted per API process: each process also bounds its own total, so that no caller can
    # hold more than a fixed share of a process (and none of its Redis connections: every
    # stream of a process shares one subscription).
    streams_per_owner: int = Field(
        20, ge=1, le=10_000, description="status streams one owner may hold open per API process"
    )
    streams_per_process: int = Field(
        1000, ge=1, le=100_000, description="status streams one API process serves at once"
    )
    stream_max_seconds: float = Field(
        300,
        gt=0,
        le=86_400,
        description="seconds a status stream lasts; then the client is told to reconnect",
    )
    # -- metrics
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65_535,
        description="port of the worker's Prometheus metrics (/metrics); off when unset",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="address the worker's metrics port listens on (0.0.0.0 in a container)",
    )
    # -- argument limits
    # Job arguments live in Redis and the job history: bounded, whatever the HTTP body limit.
    max_args_bytes: int = Field(
        65_536, ge=1024, le=64 << 20, description="largest job arguments, in bytes of JSON"
    )
