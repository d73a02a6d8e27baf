"""Maintenance settings: the schedules (`ARQ_` prefix, as before), database backups (`BACKUP_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class MaintenanceSettings(BaseSettings):
    """Which maintenance schedules the workers run, and what the nightly cleanup removes."""

    model_config = SettingsConfigDict(env_prefix="ARQ_", env_file=".env", extra="ignore")

    cron_statistics: bool = Field(True, description="recompute community statistics hourly")
    cron_cleanup: bool = Field(False, description="remove old data nightly (03:00)")
    cron_backup: bool = Field(True, description="back up the database nightly (02:30, BACKUP_*)")
    cleanup_retention_days: int = Field(
        365,
        ge=1,
        le=36_500,
        description="age in days of the data the nightly cleanup removes",
        # CLEANUP_RETENTION_DAYS, the name the admin docs use, is read too.
        validation_alias=AliasChoices(
            "cleanup_retention_days", "ARQ_CLEANUP_RETENTION_DAYS", "CLEANUP_RETENTION_DAYS"
        ),
    )


# The longest a backup may be allowed to take (`BACKUP_TIMEOUT`); the task's own limit is above it.
BACKUP_TIMEOUT_MAX = 24 * 3600.0


class BackupSettings(BaseSettings):
    """Where `backup_database` writes, how many backups it keeps and which pg_dump it runs."""

    model_config = SettingsConfigDict(
        env_prefix="BACKUP_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    dir: Path = Field(
        Path("backups"),
        description="directory of the backup files, created (mode 0700) if missing",
    )
    keep: int = Field(
        7, ge=1, le=10_000, description="newest backups kept per database; older ones are removed"
    )
    # PostgreSQL backups need the client tools (postgresql-client), of at least the server's
    # major version: an older pg_dump refuses to dump a newer server.
    pg_dump: str = Field(
        "pg_dump", min_length=1, description="the pg_dump executable: a name on PATH or a path"
    )
    timeout: float = Field(
        3600, gt=0, le=BACKUP_TIMEOUT_MAX, description="seconds one backup may take"
    )

    @field_validator("dir", mode="before")
    @classmethod
    def _non_empty_dir(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must name a directory")
        return value

    @field_validator("pg_dump")
    @classmethod
    def _strip_pg_dump(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name the pg_dump executable")
        return value.strip()
