"""Database backups: PostgreSQL through `pg_dump --format=custom`, SQLite through its online
backup API, into one directory under timestamped names; the newest `BACKUP_KEEP` of each
database are kept.

A backup is written under a hidden temporary name, fsynced, then published under its final name
in one step, so a half-written file never counts as a backup (nor pushes a real one out). The
database password reaches pg_dump only through its environment, and whatever pg_dump prints is
scrubbed of it before it is logged or reported. The file handling lives in
`src.maintenance.backup_files`, pg_dump's in `src.maintenance.backup_pg`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sqlite3
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from src.arq.context import ProgressReporter as Progress
from src.maintenance.backup_files import (
    EXTENSIONS,
    BackupFormat,
    backup_dir,
    backup_name_pattern,
    file_prefix,
    publish,
    remove_stale_partials,
    rotate,
)
from src.maintenance.backup_pg import (
    PROGRESS_INTERVAL,
    STDERR_LIMIT,
    pg_dump,
    pg_environment,
    scrub,
)
from src.maintenance.config import BackupSettings
from src.maintenance.exceptions import BackupFailed, BackupUnsupported

# Names defined here before the file and pg_dump helpers had modules of their own.
__all__ = [
    "EXTENSIONS",
    "PROGRESS_INTERVAL",
    "STAMP_FORMAT",
    "STDERR_LIMIT",
    "BackupFormat",
    "BackupReport",
    "backup_database",
    "backup_name_pattern",
    "file_prefix",
    "pg_environment",
    "rotate",
    "scrub",
    "sqlite_file",
]

logger = logging.getLogger(__name__)

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class BackupReport:
    """What a backup produced: the file, its size, and what rotation removed."""

    path: str
    size_bytes: int
    duration_ms: int
    database: str
    format: BackupFormat
    removed: list[str]
    kept: int

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "format": self.format.value}


async def backup_database(
    url: str | URL, *, settings: BackupSettings, progress: Progress | None = None
) -> BackupReport:
    """Back up the database at `url` into `settings.dir`, then remove its backups beyond
    `settings.keep` (only files named as this function names that database's backups)."""
    started = time.monotonic()
    taken_at = datetime.now(UTC)
    try:
        target = make_url(url)
    except ArgumentError:
        # Its message would quote the URL, password and all.
        raise BackupUnsupported("the database URL cannot be parsed") from None
    backend = target.get_backend_name()
    source: Path | None = None
    if backend == "postgresql":
        if not target.database:
            raise BackupUnsupported("the database URL names no PostgreSQL database")
        database, backup_format = target.database, BackupFormat.CUSTOM
    elif backend == "sqlite":
        source = sqlite_file(target)
        database, backup_format = source.stem, BackupFormat.SQLITE
    else:
        raise BackupUnsupported(f"cannot back up a {backend!r} database")
    directory = backup_dir(settings.dir)
    prefix = file_prefix(database)
    extension = EXTENSIONS[backup_format]
    remove_stale_partials(directory, prefix, extension, older_than=2 * settings.timeout + 60)
    stamp = taken_at.strftime(STAMP_FORMAT)
    partial = directory / f".{prefix}-{stamp}.{extension}.{secrets.token_hex(4)}.partial"
    await _report(progress, 0, f"backing up database {database!r}")
    published: Path | None = None
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            if source is None:
                await pg_dump(target, fd, settings=settings, progress=progress)
            else:
                await _sqlite_backup(source, partial, settings=settings)
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        published = publish(partial, directory, f"{prefix}-{stamp}", extension)
    except OSError as exc:
        raise BackupFailed(
            f"cannot write the backup into {str(directory)!r} (BACKUP_DIR): {exc.strerror}"
        ) from None
    finally:
        if published is None:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
    await _report(progress, 90, f"{size} bytes written to {published.name}")
    removed, kept = rotate(
        directory,
        database=database,
        backup_format=backup_format,
        keep=settings.keep,
        newest=published,
    )
    duration_ms = round((time.monotonic() - started) * 1000)
    logger.info(
        "backup of database %r: %s (%d bytes, %d ms); %d old backup(s) removed",
        database,
        published,
        size,
        duration_ms,
        len(removed),
    )
    await _report(progress, 100, f"backup {published.name} done")
    return BackupReport(
        path=str(published),
        size_bytes=size,
        duration_ms=duration_ms,
        database=database,
        format=backup_format,
        removed=removed,
        kept=kept,
    )


# -- SQLite ----------------------------------------------------------------------------------


def sqlite_file(url: URL) -> Path:
    """The database file of a SQLite URL; an in-memory database cannot be backed up."""
    database = url.database or ""
    uri = str(url.query.get("uri", "")).lower() in {"true", "1"}
    if uri and database.startswith("file:"):
        database, _, options = database[len("file:") :].partition("?")
        if "mode=memory" in options:
            database = ""
    if database in {"", ":memory:"} or url.query.get("mode") == "memory":
        raise BackupUnsupported(
            "an in-memory SQLite database cannot be backed up (it lives and dies with the"
            " process that opened it); use a database file"
        )
    path = Path(database)
    if not path.is_file():
        raise BackupFailed(f"the SQLite database file {database!r} does not exist")
    return path


async def _sqlite_backup(source: Path, target: Path, *, settings: BackupSettings) -> None:
    """Copy `source` into `target` with SQLite's online backup API, in a thread.

    `BACKUP_TIMEOUT` bounds the wait for locks here; the copy itself (local, one step) is not
    interrupted.
    """
    copy = asyncio.ensure_future(asyncio.to_thread(_sqlite_copy, source, target, settings.timeout))
    try:
        await asyncio.wait({copy})
    finally:
        if not copy.done():
            # A thread cannot be stopped: let the copy end before its file is removed.
            await asyncio.wait({copy})
    try:
        copy.result()
    except (sqlite3.Error, OSError) as exc:
        raise BackupFailed(f"SQLite backup of {source.name!r} failed: {exc}") from None


def _sqlite_copy(source: Path, target: Path, busy_timeout: float) -> None:
    # Read-only: a missing file is an error instead of a new empty database.
    with (
        contextlib.closing(
            sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=busy_timeout)
        ) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        # One step: a copy of one moment. Step by step, every write by another connection (the
        # worker's own job history) would restart the copy.
        src.backup(dst, pages=-1)


async def _report(progress: Progress | None, percent: float, message: str) -> None:
    if progress is not None:
        await progress(percent, message)
