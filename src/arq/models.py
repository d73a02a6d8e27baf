"""The job history table: the record of every job after Redis has forgotten it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from src.database import Base, JSONType, UTCDateTime

# The partial index's condition (the same SQL as in migration 0006; `src.arq.history` writes it
# as a column expression for its queries).
NOTIFY_PENDING = text("notify_url IS NOT NULL AND notification_job_id IS NULL")


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

    __table_args__ = (
        Index("ix_arq_jobs_owner_enqueued", "owner", "enqueued_at"),
        Index("ix_arq_jobs_status_function", "status", "function"),
        Index("ix_arq_jobs_finished_status", "finished_at", "status"),
        Index("ix_arq_jobs_enqueued", "enqueued_at"),
        # Endings still owing a webhook: the few rows the notification sweep reads.
        Index(
            "ix_arq_jobs_notify_pending",
            "finished_at",
            postgresql_where=NOTIFY_PENDING,
            sqlite_where=NOTIFY_PENDING,
        ),
    )
