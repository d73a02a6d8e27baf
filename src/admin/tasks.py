"""Admin and system tasks: `send_notification`, `cleanup_old_data`, `update_statistics`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.ext.asyncio import AsyncEngine

from src.admin import backup, cleanup, reports, statistics
from src.admin.config import BACKUP_TIMEOUT_MAX, BackupSettings, NotificationSettings
from src.admin.exceptions import WebhookFailed
from src.admin.notifications import TEMPLATES, render_template, send_webhook
from src.arq.context import JobContext
from src.arq.exceptions import RetryLater
from src.arq.registry import Schedule, registry
from src.auth.schemas import Role
from src.comments.schemas import VK_ID_MAX
from src.comments.tasks import check_aware, exactly_one
from src.config import load


class NotificationArgs(BaseModel):
    """A webhook: a JSON payload (or a named template) POSTed to `url`, signed if `secret`.
    Give either payload or template."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            **exactly_one("payload", "template"),
            "examples": [{"url": "https://example.org/hooks/vk", "payload": {"text": "hello"}}],
        },
    )

    channel: Literal["webhook"] = "webhook"
    url: str = Field(
        max_length=2048,
        pattern=r"^https?://",
        description="http(s) URL; private, loopback and link-local addresses are refused",
        examples=["https://example.org/hooks/vk"],
    )
    payload: dict[str, Any] | None = Field(None, description="the JSON body")
    template: str | None = Field(
        None,
        description=f"or one of: {', '.join(TEMPLATES)}",
        json_schema_extra={"enum": [*TEMPLATES, None]},
    )
    context: dict[str, Any] = Field(default_factory=dict, description="the template's values")
    secret: str | None = Field(
        None, min_length=16, max_length=256, description="HMAC-SHA256 key for X-Signature"
    )

    @field_validator("template")
    @classmethod
    def _known_template(cls, value: str | None) -> str | None:
        if value is not None and value not in TEMPLATES:
            raise ValueError(f"unknown template; known: {', '.join(TEMPLATES)}")
        return value

    @field_validator("payload", "context")
    @classmethod
    def _storable(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # The job travels through Redis as JSON of 64-bit numbers: refuse here what cannot.
        try:
            dumped = orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            raise ValueError(f"not storable as JSON: {exc}") from None
        if b"\\u0000" in dumped:  # PostgreSQL's jsonb cannot hold NUL
            raise ValueError("must not contain NUL characters")
        return value

    @model_validator(mode="after")
    def _one_body(self) -> Self:
        if (self.payload is None) == (self.template is None):
            raise ValueError("give either payload or template")
        return self


@registry.on_worker_startup
async def load_notification_settings(ctx: dict[str, Any]) -> None:
    ctx["notify_settings"] = load(NotificationSettings)


@registry.task(args=NotificationArgs, timeout=300)
async def send_notification(ctx: JobContext, args: NotificationArgs) -> dict[str, Any]:
    """POST a JSON webhook; retried with backoff on 5xx and network errors, not on 4xx."""
    settings: NotificationSettings = ctx["notify_settings"]  # type: ignore[typeddict-item]
    payload = (
        args.payload
        if args.payload is not None
        else render_template(args.template or "", args.context)
    )
    try:
        report = await send_webhook(args.url, payload, secret=args.secret, settings=settings)
    except WebhookFailed as exc:
        raise RetryLater(exc.detail, defer=exc.retry_after) from exc
    return {
        "status_code": report.status_code,
        "attempts": report.attempts,
        "duration_ms": report.duration_ms,
        "response": report.response_excerpt,
    }


class CleanupArgs(BaseModel):
    """What counts as old; with `dry_run` (the default) nothing is removed, only counted."""

    model_config = ConfigDict(extra="forbid")

    older_than_days: int = Field(ge=1, le=36_500, examples=[180])
    dry_run: bool = True
    batch_size: int = Field(5000, ge=100, le=50_000)


@registry.task(args=CleanupArgs, role=Role.ADMIN, timeout=3600)
async def cleanup_old_data(ctx: JobContext, args: CleanupArgs) -> dict[str, Any]:
    """Remove (or count, with dry_run) comments, analyses and finished jobs past a cut-off."""
    return await cleanup.cleanup_old_data(
        ctx["sessionmaker"],
        older_than_days=args.older_than_days,
        dry_run=args.dry_run,
        batch_size=args.batch_size,
        progress=ctx["progress"],
    )


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


@registry.task(args=NoArgs, role=Role.ADMIN, timeout=1800)
async def update_statistics(ctx: JobContext, args: NoArgs) -> dict[str, Any]:
    """Recompute per-community aggregates (comments, authors, last parse, jobs by status)."""
    async with ctx["sessionmaker"].begin() as session:
        return await statistics.update_statistics(session)


registry.schedule(
    Schedule("update_statistics", minute=0, enabled=lambda settings: settings.cron_statistics)
)
registry.schedule(
    Schedule(
        "cleanup_old_data",
        hour=3,
        minute=0,
        kwargs=lambda settings: {
            "older_than_days": settings.cleanup_retention_days,
            "dry_run": False,
        },
        enabled=lambda settings: settings.cron_cleanup,
    )
)


# -- reports ------------------------------------------------------------------------------------

REPORT_URL = "/api/v1/comments/reports/{report_id}"


class ReportArgs(BaseModel):
    """A community's comments report over a period: `since` inclusive, `until` exclusive."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "description": "A community's comments report over a period: `since` inclusive, "
            "`until` exclusive; since must be before until, and the period is at most "
            f"{reports.MAX_PERIOD_DAYS} days.",
            "examples": [{"group_id": 1, "format": "html", "top_n": 10}],
        },
    )

    group_id: int = Field(gt=0, le=VK_ID_MAX, description="the community's id", examples=[1])
    since: datetime | None = Field(None, description="comments from this time on")
    until: datetime | None = Field(None, description="comments before this time")
    format: reports.ReportFormat = Field(reports.ReportFormat.JSON, description="the file's format")
    top_n: int = Field(20, ge=1, le=200, description="authors, posts and keywords listed")

    _aware = field_validator("since", "until")(check_aware)

    @model_validator(mode="after")
    def _period(self) -> Self:
        if self.since is not None and self.until is not None:
            if self.since >= self.until:
                raise ValueError("since must be before until")
            if self.until - self.since > timedelta(days=reports.MAX_PERIOD_DAYS):
                raise ValueError(f"the period is at most {reports.MAX_PERIOD_DAYS} days")
        return self


@registry.task(args=ReportArgs, timeout=1800)
async def generate_report(ctx: JobContext, args: ReportArgs) -> dict[str, Any]:
    """Comments by day, top authors, posts and keywords of a community, stored for download."""
    result = await reports.generate_report(
        ctx["sessionmaker"],
        report_id=ctx["job_id"],
        group_id=args.group_id,
        since=args.since,
        until=args.until,
        report_format=args.format,
        top_n=args.top_n,
        params=args.model_dump(mode="json"),
        # Put there by the comments package's start-up hook (`open_analyzer`).
        analyzer=ctx.get("morph"),  # type: ignore[arg-type]
        progress=ctx["progress"],
    )
    return {**result, "download_url": REPORT_URL.format(report_id=ctx["job_id"])}


# -- database backups -------------------------------------------------------------------------
# PostgreSQL backups run pg_dump: the worker needs the PostgreSQL client tools (postgresql-client,
# of at least the server's major version) on its PATH or at BACKUP_PG_DUMP.


@registry.on_worker_startup
async def load_backup_settings(ctx: dict[str, Any]) -> None:
    ctx["backup_settings"] = load(BackupSettings)


@registry.task(args=NoArgs, role=Role.ADMIN, timeout=BACKUP_TIMEOUT_MAX + 300)
async def backup_database(ctx: JobContext, args: NoArgs) -> dict[str, Any]:
    """Back up the app's database into BACKUP_DIR, keeping its newest BACKUP_KEEP backups."""
    # The worker's own engine: the database its jobs use, whichever settings built it.
    engine: AsyncEngine = ctx["engine"]  # type: ignore[typeddict-item]
    report = await backup.backup_database(
        engine.url,
        settings=ctx["backup_settings"],  # type: ignore[typeddict-item]
        progress=ctx["progress"],
    )
    return report.as_dict()


registry.schedule(
    Schedule("backup_database", hour=2, minute=30, enabled=lambda settings: settings.cron_backup)
)
