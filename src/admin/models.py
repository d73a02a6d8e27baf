"""Admin tables: per-community statistics and generated comment reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from src.database import Base, JSONType, UTCDateTime


class CommunityStats(Base):
    """Counts of one stored community (its positive VK id), as of `computed_at`."""

    __tablename__ = "community_stats"

    community_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    screen_name: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(Text)
    posts: Mapped[int] = mapped_column(Integer, default=0)
    comments: Mapped[int] = mapped_column(Integer, default=0)
    deleted_comments: Mapped[int] = mapped_column(Integer, default=0)
    # Distinct non-null `from_id` of the community's comments.
    authors: Mapped[int] = mapped_column(Integer, default=0)
    analysed_comments: Mapped[int] = mapped_column(Integer, default=0)
    first_comment_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_comment_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_parsed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # {status: count} of the `parse_vk_comments` jobs naming this community's `group_id`.
    jobs_by_status: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Report(Base):
    """A generated comments report (`src.admin.reports`), stored whole for download.

    A database row rather than a worker's file: any API process on any host can serve it.
    """

    __tablename__ = "reports"

    # The id of the `generate_report` job that made it (job ids are up to 128 characters).
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    # The job's owner: only they (and admins) may download it.
    owner: Mapped[str] = mapped_column(String(100))
    group_id: Mapped[int] = mapped_column(BigInteger)
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
