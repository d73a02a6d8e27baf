"""The shapes the comments API speaks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from src.arq.schemas import EnqueueResponse
from src.schemas import Page

# A comment reference with at most 18 digits a side fits in BIGINT (real VK ids are far shorter).
COMMENT_REF_PATTERN = r"^-?[0-9]{1,18}_[0-9]{1,18}$"
# A comma-separated list of 1 to 1000 of them, as the `comment_ids` query parameter takes it.
COMMENT_REFS_PATTERN = r"^ *-?[0-9]{1,18}_[0-9]{1,18} *(, *-?[0-9]{1,18}_[0-9]{1,18} *){0,999}$"


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


class CommentPage(Page[CommentOut]):
    """One page of comments, newest first, and how many match in all."""


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


class PipelineData(BaseModel):
    group_id: int
    limit: int = Field(description="newest posts parsed")
    format: str = Field(description="the report's file format")
    top_n: int = Field(description="authors, posts and keywords the report lists")
    jobs: list[EnqueueResponse] = Field(
        description="parse, morphology of the comments without a stored analysis, the "
        "community's statistics, the report, in this order: each one `waiting` until the one "
        "before it has completed (a failed step fails the ones after it with `DependencyFailed`)"
    )
    report_id: str = Field(description="the report's job id (the last job)")
    download_url: str = Field(description="where the report downloads once its job is complete")


class PipelineResponse(BaseModel):
    """A community's pipeline, queued as one chain of jobs (all of them or none)."""

    success: bool = True
    message: str
    data: PipelineData
