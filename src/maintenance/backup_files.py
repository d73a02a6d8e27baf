"""The backup directory: file names, publishing a finished backup, and rotating old ones.

A backup is written under a hidden temporary name and published under its final name in one
step, so a half-written file never counts as a backup (nor pushes a real one out).
"""

from __future__ import annotations

import logging
import os
import re
import time
from enum import StrEnum
from pathlib import Path

from src.maintenance.exceptions import BackupFailed

logger = logging.getLogger(__name__)


class BackupFormat(StrEnum):
    CUSTOM = "custom"  # pg_dump's archive format: restore with `pg_restore`
    SQLITE = "sqlite"  # a SQLite database file: open it, or copy it into place


EXTENSIONS = {BackupFormat.CUSTOM: "dump", BackupFormat.SQLITE: "sqlite3"}


def file_prefix(database: str) -> str:
    """`database` as the start of a file name (path separators and the like replaced)."""
    return re.sub(r"[^\w.-]", "_", database).lstrip(".") or "database"


def backup_name_pattern(database: str, backup_format: BackupFormat) -> re.Pattern[str]:
    """Names of `database`'s backups: `<name>-<UTC stamp>[-<n>].<ext>`; groups: stamp, n."""
    return re.compile(
        rf"^{re.escape(file_prefix(database))}-(\d{{8}}T\d{{6}}Z)(?:-(\d+))?"
        rf"\.{re.escape(EXTENSIONS[backup_format])}$"
    )


def rotate(
    directory: Path,
    *,
    database: str,
    backup_format: BackupFormat,
    keep: int,
    newest: Path | None = None,
) -> tuple[list[str], int]:
    """Remove `database`'s oldest backups in `directory` beyond `keep`; returns the names
    removed and how many are left. `newest` (the one just made) is kept whatever its name says
    (a clock set back must not make a backup rotate itself out)."""
    pattern = backup_name_pattern(database, backup_format)
    backups: list[tuple[tuple[str, int], str]] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            match = pattern.match(entry.name)
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            if newest is not None and entry.name == newest.name:
                continue
            backups.append(((match[1], int(match[2] or 0)), entry.name))
    backups.sort(reverse=True)
    slots = keep - 1 if newest is not None else keep
    removed: list[str] = []
    left = len(backups)
    for _, name in backups[slots:]:
        try:
            (directory / name).unlink()
        except FileNotFoundError:  # a concurrent rotation got there first
            left -= 1
            continue
        except OSError as exc:
            # The backup itself succeeded; the file left over shows in the next `kept`.
            logger.warning("cannot remove the old backup %s: %s", name, exc.strerror)
            continue
        removed.append(name)
        left -= 1
    return sorted(removed), left + (newest is not None)


def backup_dir(configured: Path) -> Path:
    """The absolute backup directory, created (owner-only) if missing."""
    directory = configured.expanduser().absolute()
    if not directory.is_dir():
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.chmod(0o700)  # mkdir's mode is masked by the umask
        except OSError as exc:
            raise BackupFailed(
                f"cannot create the backup directory {str(directory)!r} (BACKUP_DIR):"
                f" {exc.strerror}"
            ) from None
    return directory


def publish(partial: Path, directory: Path, stem: str, extension: str) -> Path:
    """Give the finished `partial` its final name, never overwriting a backup made in the same
    second (`-1`, `-2`, ... are added), then make the rename durable."""
    for attempt in range(1000):
        final = directory / (
            f"{stem}.{extension}" if attempt == 0 else f"{stem}-{attempt}.{extension}"
        )
        try:
            os.link(partial, final)  # fails if the name is taken, unlike rename
        except FileExistsError:
            continue
        except OSError:
            # A file system without hard links: claim the name, then move onto it.
            try:
                os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                continue
            os.replace(partial, final)
        else:
            partial.unlink()
        _fsync_dir(directory)
        return final
    raise BackupFailed(f"no free name for backup {stem}.{extension} in {str(directory)!r}")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_partials(
    directory: Path, prefix: str, extension: str, *, older_than: float
) -> None:
    """Remove temporary files of backups that cannot still be running (their worker died)."""
    pattern = re.compile(
        rf"^\.{re.escape(prefix)}-\d{{8}}T\d{{6}}Z\.{re.escape(extension)}"
        r"\.[0-9a-f]{8}\.partial(?:-journal)?$"
    )
    cutoff = time.time() - older_than
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if pattern.match(entry.name) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    logger.warning("removed the unfinished backup %s", entry.name)
    except OSError as exc:  # tidying up is best effort; the backup itself reports real trouble
        logger.warning("cannot remove unfinished backups: %s", exc.strerror)
