"""PostgreSQL backups: `pg_dump --format=custom`, its libpq environment, and scrubbing its output.

The database password reaches pg_dump only through its environment, and whatever pg_dump prints
is scrubbed of it before it is logged or reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
from collections.abc import Iterable
from urllib.parse import quote

from sqlalchemy.engine import URL

from src.arq.context import ProgressReporter as Progress
from src.maintenance.config import BackupSettings
from src.maintenance.exceptions import BackupFailed, BackupTimedOut, BackupToolMissing

logger = logging.getLogger(__name__)

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


async def pg_dump(
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
            if progress is not None:
                await progress(10, f"pg_dump running: {os.fstat(fd).st_size} bytes so far")
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
