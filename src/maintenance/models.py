"""Maintenance tables: per-community statistics."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text
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
