"""Errors of maintenance: database backups.

Backup errors never carry the database URL or its password (pg_dump's messages are scrubbed
before they get here).
"""

from __future__ import annotations

from src.exceptions import AppError


class MaintenanceError(AppError):
    status_code = 400


class BackupError(MaintenanceError):
    """A database backup could not be made; no backup file was left behind."""

    status_code = 500


class BackupUnsupported(BackupError):
    """The database cannot be backed up this way (an in-memory SQLite database, say)."""

    status_code = 422


class BackupToolMissing(BackupError):
    """pg_dump is not installed where `BACKUP_PG_DUMP` says."""

    status_code = 503


class BackupFailed(BackupError):
    """The dump or copy failed; `stderr` is pg_dump's message, scrubbed and shortened."""

    status_code = 502

    def __init__(self, detail: str, *, exit_code: int | None = None, stderr: str = "") -> None:
        super().__init__(detail, exit_code=exit_code, stderr=stderr)
        self.exit_code = exit_code
        self.stderr = stderr


class BackupTimedOut(BackupError):
    """The backup took longer than `BACKUP_TIMEOUT`; pg_dump was killed."""

    status_code = 504

    def __init__(self, detail: str, *, timeout: float) -> None:
        super().__init__(detail, timeout=timeout)
        self.timeout = timeout
