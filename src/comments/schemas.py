"""The shapes the comments API speaks."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from src.admin.reports import ReportOut

# VK ids are stored as BIGINT and travel through Redis as JSON (64-bit integers): a larger one is
# refused at the edge with a 422, never discovered in the database or the queue.
VK_ID_MAX = 2**63 - 1
# A comment reference with at most 18 digits a side fits in BIGINT (real VK ids are far shorter).
COMMENT_REF_PATTERN = r"^-?[0-9]{1,18}_[0-9]{1,18}$"
# A comma-separated list of 1 to 1000 of them, as the `comment_ids` query parameter takes it.
COMMENT_REFS_PATTERN = r"^ *-?[0-9]{1,18}_[0-9]{1,18} *(, *-?[0-9]{1,18}_[0-9]{1,18} *){0,999}$"
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_only(value: Any) -> Any:
    # Pydantic would read `0.5` or `1700000000` as a Unix time; the API speaks ISO 8601 only.
    if isinstance(value, str) and not _ISO_DATE.match(value.strip()):
        raise ValueError("must be an ISO 8601 date-time with a timezone, e.g. 2026-01-01T00:00:00Z")
    return value


IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]
"""A query parameter's date-time: ISO 8601 with a timezone (`Z` or `+03:00`), nothing else."""


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
