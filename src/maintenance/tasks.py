"""Maintenance tasks: `cleanup_old_data`, `update_statistics` (every community's; one
community's: `update_community_statistics`), `backup_database`, and their schedules (switched by
`MaintenanceSettings`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from src.arq.context import JobContext, Resource, WorkerContext, provide
from src.arq.registry import Schedule, TaskRegistry
from src.auth.schemas import Role
from src.config import load
from src.maintenance import backup, cleanup, statistics
from src.maintenance.config import BACKUP_TIMEOUT_MAX, BackupSettings, MaintenanceSettings
from src.schemas import VkId

tasks = TaskRegistry()

BACKUP_SETTINGS: Resource[BackupSettings] = Resource("backup_settings")

# Limits stated once: the task's arguments and the endpoint's query parameters share them.
OlderThanDays = Annotated[int, Field(ge=1, le=36_500)]


class CleanupArgs(BaseModel):
    """What counts as old; with `dry_run` (the default) nothing is removed, only counted."""

    model_config = ConfigDict(extra="forbid")

    older_than_days: OlderThanDays | None = Field(
        None,
        description="age in days of the data removed; unset: the workers' configured retention "
        "(ARQ_CLEANUP_RETENTION_DAYS, 365 by default), as the nightly cleanup uses",
        examples=[180],
    )
    dry_run: bool = True
    batch_size: int = Field(5000, ge=100, le=50_000)


@tasks.task(args=CleanupArgs, role=Role.ADMIN, timeout=3600)
async def cleanup_old_data(ctx: JobContext, args: CleanupArgs) -> dict[str, Any]:
    """Remove (or count, with dry_run) comments, analyses and finished jobs past a cut-off."""
    older_than_days = args.older_than_days
    if older_than_days is None:
        # Read when the job runs, like the schedule's: the workers' setting, not the API's.
        older_than_days = load(MaintenanceSettings).cleanup_retention_days
    result = await cleanup.cleanup_old_data(
        ctx["sessionmaker"],
        older_than_days=older_than_days,
        dry_run=args.dry_run,
        batch_size=args.batch_size,
        progress=ctx["progress"],
    )
    return {**result, "older_than_days": older_than_days}


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


@tasks.task(args=NoArgs, role=Role.ADMIN, timeout=1800)
async def update_statistics(ctx: JobContext, args: NoArgs) -> dict[str, Any]:
    """Recompute per-community aggregates (comments, authors, last parse, jobs by status)."""
    async with ctx["sessionmaker"].begin() as session:
        return await statistics.update_statistics(session)


class CommunityArgs(BaseModel):
    """One stored community."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"group_id": 1}]})

    group_id: VkId = Field(description="the community's id", examples=[1])


@tasks.task(args=CommunityArgs, timeout=600)
async def update_community_statistics(ctx: JobContext, args: CommunityArgs) -> dict[str, Any]:
    """Recompute one community's aggregates (its row of the statistics; the others stay)."""
    async with ctx["sessionmaker"].begin() as session:
        return await statistics.update_statistics(session, community_id=args.group_id)


tasks.schedule(
    Schedule(
        "update_statistics",
        minute=0,
        settings=MaintenanceSettings,
        enabled=lambda settings: settings.cron_statistics,
    )
)
tasks.schedule(
    Schedule(
        "cleanup_old_data",
        hour=3,
        minute=0,
        settings=MaintenanceSettings,
        kwargs=lambda settings: {
            "older_than_days": settings.cleanup_retention_days,
            "dry_run": False,
        },
        enabled=lambda settings: settings.cron_cleanup,
    )
)


# -- database backups -------------------------------------------------------------------------
# PostgreSQL backups run pg_dump: the worker needs the PostgreSQL client tools (postgresql-client,
# of at least the server's major version) on its PATH or at BACKUP_PG_DUMP.


@tasks.on_worker_startup
async def load_backup_settings(ctx: WorkerContext) -> None:
    provide(ctx, BACKUP_SETTINGS, load(BackupSettings))


@tasks.task(args=NoArgs, role=Role.ADMIN, timeout=BACKUP_TIMEOUT_MAX + 300)
async def backup_database(ctx: JobContext, args: NoArgs) -> dict[str, Any]:
    """Back up the app's database into BACKUP_DIR, keeping its newest BACKUP_KEEP backups."""
    # The worker's own engine: the database its jobs use, whichever settings built it.
    report = await backup.backup_database(
        ctx["engine"].url, settings=BACKUP_SETTINGS.get(ctx), progress=ctx["progress"]
    )
    return report.as_dict()


tasks.schedule(
    Schedule(
        "backup_database",
        hour=2,
        minute=30,
        settings=MaintenanceSettings,
        enabled=lambda settings: settings.cron_backup,
    )
)
