"""The shapes the comments API speaks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from src.admin.reports import ReportOut


class AttachmentOut(BaseModel):
    """A summary of one attachment: its VK type and, where obvious, a url and a title."""

    model_config = ConfigDict(extra="ignore")

    type: str
    url: str | None = None
    title: str | None = None


class CommentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    owner_id: int = Field(description="the wall's owner: negative for a community")
    comment_id: int
    post_id: int
    from_id: int | None = Field(description="the author: a user, or a negative community id")
    date: datetime
    text: str
    likes: int
    reply_to_user: int | None
    reply_to_comment: int | None
    parent_comment_id: int | None = Field(
        description="the thread's top-level comment; null for a top-level comment"
    )
    thread_count: int = Field(description="replies in this comment's thread")
    is_deleted: bool = Field(description="deleted on VK; text is the last one seen")
    attachments: list[AttachmentOut]
    first_seen_at: datetime
    updated_at: datetime


class PostOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    owner_id: int = Field(description="the wall's owner: negative for a community")
    post_id: int
    from_id: int | None
    date: datetime
    text: str
    comments_count: int
    likes: int
    reposts: int
    views: int | None
    is_pinned: bool
    fetched_at: datetime
    skip_code: int | None = Field(description="VK error code if the comments were skipped")
    skip_reason: str | None


class CommentPage(BaseModel):
    """One page of comments, newest first, and how many match in all."""

    items: list[CommentOut]
    total: int
    limit: int
    offset: int


class ParseJobData(BaseModel):
    job_id: str
    function: str
    group_id: int | None
    screen_name: str | None = None
    limit: int
    status_url: str
    result_url: str


class ParseJobResponse(BaseModel):
    """The job accepted to parse a community (the seed's shape)."""

    success: bool = True
    message: str
    data: ParseJobData


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


class AnalysisOut(BaseModel):
    """The stored morphology of one comment."""

    model_config = ConfigDict(from_attributes=True)

    owner_id: int
    comment_id: int
    word_count: int
    has_cyrillic: bool
    lemma_counts: dict[str, int]
    pos_counts: dict[str, int]
    details: dict[str, Any]
    analyzed_at: datetime
    stale: bool = Field(False, description="the comment's text changed since it was analysed")


class ReportPage(BaseModel):
    """One page of stored reports, newest first, and how many there are in all."""

    items: list[ReportOut]
    total: int
    limit: int
    offset: int
