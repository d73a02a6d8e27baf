"""Tasks of comment reports: `generate_report`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from src.arq.context import JobContext
from src.arq.registry import TaskRegistry
from src.comments.tasks import MORPH
from src.reports import service
from src.reports.schemas import MAX_PERIOD_DAYS, ReportFormat
from src.schemas import VkId, check_aware

tasks = TaskRegistry()

REPORT_URL = "/api/v1/comments/reports/{report_id}"

# Limits stated once: the task's arguments and the endpoint's query parameters share them.
ReportTopN = Annotated[int, Field(ge=1, le=200)]
FileFormat = Annotated[ReportFormat, Field(description="the file's format")]


class ReportArgs(BaseModel):
    """A community's (or all communities') comments report over a period: `since` inclusive,
    `until` exclusive."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "description": "A community's comments report over a period (without group_id: "
            "over all stored communities): `since` inclusive, `until` exclusive; since must be "
            f"before until, and the period is at most {MAX_PERIOD_DAYS} days.",
            "examples": [{"group_id": 1, "format": "html", "top_n": 10}],
        },
    )

    group_id: VkId | None = Field(
        None, description="the community's id; unset: all stored communities", examples=[1]
    )
    since: datetime | None = Field(None, description="comments from this time on")
    until: datetime | None = Field(None, description="comments before this time")
    format: FileFormat = ReportFormat.JSON
    top_n: ReportTopN = Field(20, description="authors, posts and keywords listed")

    _aware = field_validator("since", "until")(check_aware)

    @model_validator(mode="after")
    def _period(self) -> Self:
        if self.since is not None and self.until is not None:
            if self.since >= self.until:
                raise ValueError("since must be before until")
            if self.until - self.since > timedelta(days=MAX_PERIOD_DAYS):
                raise ValueError(f"the period is at most {MAX_PERIOD_DAYS} days")
        return self


@tasks.task(args=ReportArgs, timeout=1800)
async def generate_report(ctx: JobContext, args: ReportArgs) -> dict[str, Any]:
    """Comments by day, top authors, posts and keywords of one community or all, for download."""
    result = await service.generate_report(
        ctx["sessionmaker"],
        report_id=ctx["job_id"],
        group_id=args.group_id,
        since=args.since,
        until=args.until,
        report_format=args.format,
        top_n=args.top_n,
        params=args.model_dump(mode="json"),
        # The comments package's analyzer (`open_analyzer`), if its tasks are the worker's too.
        analyzer=MORPH.get(ctx, None),
        progress=ctx["progress"],
    )
    return {**result, "download_url": REPORT_URL.format(report_id=ctx["job_id"])}
