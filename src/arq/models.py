"""The job history table: the record of every job after Redis has forgotten it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from src.database import Base, JSONType, UTCDateTime

# The partial index's condition (the same SQL as in migration 0006; `src.arq.history` writes it
# as a column expression for its queries).
NOTIFY_PENDING = text("notify_url IS NOT NULL AND notification_job_id IS NULL")
# The columns `src.arq.stats_queries` reads besides the window's own (the same list as in
# migration 0009).
STATS_INCLUDE = ["function", "status", "tries", "scheduled_for", "started_at", "finished_at"]


class JobRecord(Base):
    __tablename__ = "arq_jobs"

    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    function: Mapped[str] = mapped_column(String(100))
    queue_name: Mapped[str] = mapped_column(String(200))
    args: Mapped[dict[str, Any]] = mapped_column(JSONType)
    owner: Mapped[str] = mapped_column(String(100))
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text)
    tries: Mapped[int] = mapped_column(Integer, default=0)
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    result: Mapped[Any | None] = mapped_column(JSONType)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    abort_requested_by: Mapped[str | None] = mapped_column(String(100))
    abort_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Earlier rounds of a job re-queued from the dead-letter list: [{tries, status, error, ...}].
    attempts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    # A completion webhook: where to POST the ending, the HMAC key, and the `send_notification`
    # job that carries it (null until queued; cleared when the job is re-queued).
    notify_url: Mapped[str | None] = mapped_column(Text)
    notify_secret: Mapped[str | None] = mapped_column(String(256))
    notification_job_id: Mapped[str | None] = mapped_column(String(128))
    # The X-Request-ID of the HTTP request that enqueued it (null for other producers).
    request_id: Mapped[str | None] = mapped_column(String(64))
    # What a failed dependency does to it ("fail" or "run"); null for a job without dependencies
    # (its `JobDependency` rows name them).
    on_dependency_failure: Mapped[str | None] = mapped_column(String(8))

    __table_args__ = (
        # The two windows of jobs by enqueue time, an owner's and everyone's. On PostgreSQL they
        # carry what the queue statistics read (`STATS_INCLUDE`), which then never touch the
        # table (migration 0009).
        Index(
            "ix_arq_jobs_owner_enqueued",
            "owner",
            "enqueued_at",
            postgresql_include=STATS_INCLUDE,
        ),
        Index("ix_arq_jobs_status_function", "status", "function"),
        Index("ix_arq_jobs_finished_status", "finished_at", "status"),
        Index("ix_arq_jobs_enqueued", "enqueued_at", postgresql_include=STATS_INCLUDE),
        # Endings still owing a webhook: the few rows the notification sweep reads.
        Index(
            "ix_arq_jobs_notify_pending",
            "finished_at",
            postgresql_where=NOTIFY_PENDING,
            sqlite_where=NOTIFY_PENDING,
        ),
    )


class JobDependency(Base):
    """`job_id` waits for `depends_on` to complete (`status` "waiting" until every one has).
    `depends_on` is not a foreign key: the cleanup may delete a finished dependency, and a job
    whose dependency is gone from the history ends as if it had failed."""

    __tablename__ = "arq_job_dependencies"

    job_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("arq_jobs.job_id", ondelete="CASCADE"), primary_key=True
    )
    depends_on: Mapped[str] = mapped_column(String(128), primary_key=True)
    # Its place in the list the client gave (the status shows them in that order).
    position: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        # The jobs an ending may release: looked up for every batch of endings.
        Index("ix_arq_job_dependencies_depends_on", "depends_on"),
    )


# The rollup is PostgreSQL's (SQLite computes the statistics from the history alone); there the
# arrays are JSON lists so the schema stays the same on both.
IntArray = ARRAY(Integer).with_variant(JSON(), "sqlite")


class JobStatsRollup(Base):
    """The queue statistics of the jobs enqueued in one UTC hour, day or month (`grain`), per
    owner and task and, in the `all_owners` rows (owner ""), per task over every owner: counts
    by status, retries, and log-bucketed histograms of run time and queue wait as parallel
    arrays of bucket numbers and counts. Recomputed from the history by `src.arq.stats_rollup`
    (migration 0011), never edited."""

    __tablename__ = "arq_job_stats"

    grain: Mapped[str] = mapped_column(String(8), primary_key=True)
    all_owners: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    owner: Mapped[str] = mapped_column(String(100), primary_key=True)
    period: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    function: Mapped[str] = mapped_column(String(100), primary_key=True)
    # Jobs by status (`JobStatus` values).
    waiting: Mapped[int] = mapped_column(Integer)
    queued: Mapped[int] = mapped_column(Integer)
    deferred: Mapped[int] = mapped_column(Integer)
    in_progress: Mapped[int] = mapped_column(Integer)
    retrying: Mapped[int] = mapped_column(Integer)
    complete: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    aborted: Mapped[int] = mapped_column(Integer)
    retried_jobs: Mapped[int] = mapped_column(Integer)
    extra_tries: Mapped[int] = mapped_column(Integer)
    run_buckets: Mapped[list[int]] = mapped_column(IntArray)
    run_counts: Mapped[list[int]] = mapped_column(IntArray)
    wait_buckets: Mapped[list[int]] = mapped_column(IntArray)
    wait_counts: Mapped[list[int]] = mapped_column(IntArray)

    __table_args__ = (
        # The roll-up replaces a grain's periods; reads go by the primary key.
        Index("ix_arq_job_stats_grain_period", "grain", "period"),
    )


class JobStatsDirtyHour(Base):
    """An hour (UTC) of enqueue times whose jobs changed since the rollup last summed it: a row
    per write statement on `arq_jobs` (PostgreSQL triggers, migration 0011), taken by the
    roll-up. The statistics read a dirty hour from the history."""

    __tablename__ = "arq_job_stats_dirty"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), Identity(), primary_key=True
    )
    hour: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_arq_job_stats_dirty_hour", "hour"),)
