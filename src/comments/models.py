"""Tables of the comments pipeline: communities, their wall posts and the posts' comments."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from src.database import Base, JSONType, UTCDateTime


def _now() -> datetime:
    return datetime.now(UTC)


class Community(Base):
    """A VK community (group, public page or event), keyed by its positive id."""

    __tablename__ = "communities"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    screen_name: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(Text)
    # VK's own value, not a bool: 0 open, 1 closed, 2 private.
    is_closed: Mapped[int] = mapped_column(Integer, default=0)
    last_parsed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


class Post(Base):
    """A wall post; `owner_id` is negative for a community's wall, as VK gives it."""

    __tablename__ = "posts"

    owner_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    post_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    from_id: Mapped[int | None] = mapped_column(BigInteger)
    date: Mapped[datetime] = mapped_column(UTCDateTime)
    text: Mapped[str] = mapped_column(Text, default="")
    comments_count: Mapped[int] = mapped_column(Integer, default=0)
    likes: Mapped[int] = mapped_column(Integer, default=0)
    reposts: Mapped[int] = mapped_column(Integer, default=0)
    views: Mapped[int | None] = mapped_column(Integer)
    is_pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    # When the stored values were taken from VK: set on insert and whenever one of them changes.
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    # Why the post's comments were not collected (VK error code and message), if they were not.
    skip_code: Mapped[int | None] = mapped_column(Integer)
    skip_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_posts_owner_date", "owner_id", "date"),)


class Comment(Base):
    """A comment or a thread reply (`parent_comment_id` = the thread's top-level comment)."""

    __tablename__ = "comments"

    owner_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    comment_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    post_id: Mapped[int] = mapped_column(BigInteger)
    from_id: Mapped[int | None] = mapped_column(BigInteger)
    date: Mapped[datetime] = mapped_column(UTCDateTime)
    text: Mapped[str] = mapped_column(Text, default="")
    # casefold(text), so that search is case-insensitive in any script on every backend
    # (SQLite's lower() folds ASCII only; PostgreSQL's depends on the database's locale).
    search_text: Mapped[str] = mapped_column(Text, default="")
    likes: Mapped[int] = mapped_column(Integer, default=0)
    reply_to_user: Mapped[int | None] = mapped_column(BigInteger)
    reply_to_comment: Mapped[int | None] = mapped_column(BigInteger)
    parent_comment_id: Mapped[int | None] = mapped_column(BigInteger)
    thread_count: Mapped[int] = mapped_column(Integer, default=0)
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    # [{"type": "photo", "url": ...}, {"type": "link", "url": ..., "title": ...}, ...]
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)

    __table_args__ = (
        Index("ix_comments_owner_post_date", "owner_id", "post_id", "date"),
        Index("ix_comments_owner_date", "owner_id", "date"),
        Index("ix_comments_date", "date"),
        Index("ix_comments_from_id", "from_id"),
        # Trigram GIN on PostgreSQL serves LIKE '%q%'. On SQLite it is a plain index that
        # substring search cannot use; it exists there only so both schemas match the models.
        Index(
            "ix_comments_search_text",
            "search_text",
            postgresql_using="gin",
            postgresql_ops={"search_text": "gin_trgm_ops"},
        ),
    )


class CommentAnalysis(Base):
    """The morphology of one stored comment, computed once (again when its text changes)."""

    __tablename__ = "comment_analyses"

    owner_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    comment_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    # The text analysed: a later edit on VK makes the stored analysis stale.
    text_hash: Mapped[str] = mapped_column(String(64))
    word_count: Mapped[int] = mapped_column(Integer)
    has_cyrillic: Mapped[bool] = mapped_column(Boolean)
    # {"lemma": count}, {"POS": count}, and the lemmas in order (for keywords and phrases)
    lemma_counts: Mapped[dict[str, int]] = mapped_column(JSONType)
    pos_counts: Mapped[dict[str, int]] = mapped_column(JSONType)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType)
    analyzed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
