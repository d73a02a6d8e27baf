"""The shapes the reports API speaks."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from src.schemas import Page

MAX_PERIOD_DAYS = 3660  # a since..until series is at most ten years of days


class ReportFormat(StrEnum):
    JSON = "json"
    CSV = "csv"
    HTML = "html"


class ReportOut(BaseModel):
    """A stored report, without its content."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    owner: str = Field(description="who queued it (a user is listed their own reports only)")
    group_id: int | None = Field(description="the community; null: all stored communities")
    format: str
    content_type: str
    filename: str
    size_bytes: int
    params: dict[str, Any]
    summary: dict[str, Any]
    created_at: datetime


class ReportPage(Page[ReportOut]):
    """One page of stored reports, newest first, and how many there are in all."""
