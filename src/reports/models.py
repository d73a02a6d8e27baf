"""Report tables: generated comment reports, stored whole."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from src.database import Base, JSONType, UTCDateTime


class Report(Base):
    """A generated comments report (`src.reports.service`), stored whole for download.

    A database row rather than a worker's file: any API process on any host can serve it.
    """

    __tablename__ = "reports"

    # The id of the `generate_report` job that made it (job ids are up to 128 characters).
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    # The job's owner: only they (and admins) may download it.
    owner: Mapped[str] = mapped_column(String(100))
    # None: a report over all stored communities.
    group_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    format: Mapped[str] = mapped_column(String(8))
    # The job's arguments, as validated.
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    content_type: Mapped[str] = mapped_column(String(100))
    filename: Mapped[str] = mapped_column(String(200))
    size_bytes: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    # The totals (comments, deleted, authors, posts, days, ...), readable without the content.
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_reports_owner_created", "owner", "created_at"),
        Index("ix_reports_group_id", "group_id"),
    )
