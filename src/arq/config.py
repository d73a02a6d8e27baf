"""Worker and queue settings (`ARQ_` prefix)."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    wake_on_enqueue: bool = Field(True, description="wake idle workers through Redis on enqueue")
    reconcile_interval: float = Field(
        30, ge=0.2, le=3600, description="seconds between history/Redis reconciliations"
    )
    cron_statistics: bool = Field(True, description="recompute community statistics hourly")
    cron_cleanup: bool = Field(False, description="remove old data nightly (03:00)")
    cron_backup: bool = Field(True, description="back up the database nightly (02:30, BACKUP_*)")
    cleanup_retention_days: int = Field(
        365,
        ge=1,
        le=36_500,
        description="age in days of the data the nightly cleanup removes",
        # CLEANUP_RETENTION_DAYS, the name the admin docs use, is read too.
        validation_alias=AliasChoices(
            "cleanup_retention_days", "ARQ_CLEANUP_RETENTION_DAYS", "CLEANUP_RETENTION_DAYS"
        ),
    )
    retry_backoff: float = Field(1.0, gt=0, description="first retry delay in seconds (doubles)")
    retry_backoff_max: float = Field(300, gt=0, description="longest retry delay in seconds")
