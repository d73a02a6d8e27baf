"""Database backups: PostgreSQL through `pg_dump --format=custom`, SQLite through its online
backup API, into one directory under timestamped names; the newest `BACKUP_KEEP` of each
database are kept.

A backup is written under a hidden temporary name, fsynced, then published under its final name
in one step, so a half-written file never counts as a backup (nor pushes a real one out). The
database password reaches pg_dump only through its environment, and whatever pg_dump prints is
scrubbed of it before it is logged or reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from src.admin.config import BackupSettings
from src.admin.exceptions import (
    BackupFailed,
    BackupTimedOut,
    BackupToolMissing,
    BackupUnsupported,
)

logger = logging.getLogger(__name__)

Progress = Callable[[float, str | None], Awaitable[None]]

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
# How often a running pg_dump's progress (bytes written so far) is reported.
PROGRESS_INTERVAL = 5.0
STDERR_LIMIT = 1500
_LIBPQ_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
_INHERITED_ENV = {
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
}
_ASYNCPG_SSL = {"true": "require", "false": "disable"}
_URL_CREDENTIALS = re.compile(r"(\b[a-z][\w+.-]*://[^\s:/@]*:)[^\s@]*@", re.IGNORECASE)
_PASSWORD_SETTING = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


class BackupFormat(StrEnum):
    CUSTOM = "custom"  # pg_dump's archive format: restore with `pg_restore`
    SQLITE = "sqlite"  # a SQLite database file: open it, or copy it into place


EXTENSIONS = {BackupFormat.CUSTOM: "dump", BackupFormat.SQLITE: "sqlite3"}


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
    directory = _backup_dir(settings.dir)
    prefix = file_prefix(database)
    extension = EXTENSIONS[backup_format]
    _remove_stale_partials(directory, prefix, extension, older_than=2 * settings.timeout + 60)
    stamp = taken_at.strftime(STAMP_FORMAT)
    partial = directory / f".{prefix}-{stamp}.{extension}.{secrets.token_hex(4)}.partial"
    await _report(progress, 0, f"backing up database {database!r}")
    published: Path | None = None
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            if source is None:
                await _pg_dump(target, fd, settings=settings, progress=progress)
            else:
                await _sqlite_backup(source, partial, settings=settings)
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        published = _publish(partial, directory, f"{prefix}-{stamp}", extension)
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


def pg_environment(url: URL) -> dict[str, str]:
    """libpq's environment variables for the server, user and database of `url` (the password
    among them: on a command line any local user could read it)."""
    query = {
        key: value if isinstance(value, str) else value[-1] for key, value in url.query.items()
    }
    env: dict[str, str] = {}
    host = url.host or query.get("host")
    if host:
        env["PGHOST"] = host
    port = url.port or query.get("port")
    if port:
        env["PGPORT"] = str(port)
    if url.username:
        env["PGUSER"] = url.username
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    if url.database:
        env["PGDATABASE"] = url.database
    ssl = (query.get("sslmode") or query.get("ssl") or "").lower()
    ssl = _ASYNCPG_SSL.get(ssl, ssl)
    if ssl in _LIBPQ_SSLMODES:
        env["PGSSLMODE"] = ssl
    return env


def scrub(text: str, hidden: Iterable[str | None] = ()) -> str:
    """`text` without the given secrets (plain or URL-encoded), URL passwords and
    `password=` settings."""
    for secret in hidden:
        if secret:
            for form in {secret, quote(secret, safe="")}:
                text = text.replace(form, "***")
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    return _PASSWORD_SETTING.sub(r"\1***", text)


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


# -- PostgreSQL ------------------------------------------------------------------------------


async def _pg_dump(
    url: URL, fd: int, *, settings: BackupSettings, progress: Progress | None
) -> None:
    """Run `pg_dump --format=custom` for `url` with its output going to `fd`."""
    executable = shutil.which(settings.pg_dump)
    if executable is None:
        raise BackupToolMissing(
            f"pg_dump not found ({settings.pg_dump!r}): install the PostgreSQL client tools"
            " (postgresql-client, of at least the server's major version) or set BACKUP_PG_DUMP"
        )
    # libpq's own variables (PGSSLROOTCERT, PGPASSFILE, ...) and the locale pass; the app's
    # other secrets (API keys, tokens) are none of pg_dump's business.
    inherited = {
        key: value
        for key, value in os.environ.items()
        if key in _INHERITED_ENV or key.startswith(("PG", "LC_"))
    }
    env = {
        **inherited,
        **pg_environment(url),
        "PGAPPNAME": "vk-comments-parser backup",
        "PGCONNECT_TIMEOUT": str(max(2, min(30, round(settings.timeout)))),
    }
    try:
        process = await asyncio.create_subprocess_exec(
            executable,
            "--format=custom",
            "--no-password",  # never wait for a password prompt nobody answers
            stdin=asyncio.subprocess.DEVNULL,
            stdout=fd,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise BackupToolMissing(
            f"cannot run pg_dump ({settings.pg_dump!r}): {exc.strerror}; check BACKUP_PG_DUMP"
        ) from None
    output = asyncio.ensure_future(process.communicate())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.timeout
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BackupTimedOut(
                    f"pg_dump took longer than {settings.timeout:g} s (BACKUP_TIMEOUT); killed",
                    timeout=settings.timeout,
                )
            done, _ = await asyncio.wait({output}, timeout=min(remaining, PROGRESS_INTERVAL))
            if done:
                break
            await _report(progress, 10, f"pg_dump running: {os.fstat(fd).st_size} bytes so far")
        _, stderr = output.result()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            # Reap it (and let its pipe close) before the partial file is removed.
            await asyncio.wait({output}, timeout=5)
        if not output.done():
            output.cancel()
    message = _excerpt(stderr, url.password)
    code = process.returncode
    if code != 0:
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited {code}"
        raise BackupFailed(
            f"pg_dump {how}: {message or 'no message'}", exit_code=code, stderr=message
        )
    if message:
        logger.warning("pg_dump: %s", message)


def _excerpt(stderr: bytes | None, password: str | None) -> str:
    """pg_dump's messages as one line, scrubbed, shortened to the end (where the error is)."""
    text = " ".join(
        line.strip()
        for line in (stderr or b"").decode(errors="replace").splitlines()
        if line.strip()
    )
    text = scrub(text, [password])
    return text if len(text) <= STDERR_LIMIT else "…" + text[-STDERR_LIMIT:]


# -- SQLite ----------------------------------------------------------------------------------


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


# -- files -----------------------------------------------------------------------------------


def _backup_dir(configured: Path) -> Path:
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


def _publish(partial: Path, directory: Path, stem: str, extension: str) -> Path:
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


def _remove_stale_partials(
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


async def _report(progress: Progress | None, percent: float, message: str) -> None:
    if progress is not None:
        await progress(percent, message)
