"""What the benchmarks (bench/queue.py, bench/vk_ingest.py, bench/admin.py, bench/memory.py,
bench/stats.py, bench/chaos.py) share: argument types and the isolation flags, a fresh migrated
database of their own, text tables, progress lines and the `main` that runs one and turns its
errors into an exit code."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark cannot run or a job did not end as expected; the message says why."""


def note(message: str) -> None:
    """A progress line on stderr (the tables go to stdout)."""
    print(message, file=sys.stderr, flush=True)


def redacted(url: str) -> str:
    """`url` with its password, if any, as `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


# -- command-line arguments ---------------------------------------------------------------------


def int_from(minimum: int, problem: str) -> Callable[[str], int]:
    """An argument type: an integer of at least `minimum`; `problem` says what a smaller one
    breaks."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{problem}, got {value}")
        return value

    return parse


positive_int = int_from(1, "must be at least 1")


def number_in(
    low: float, high: float, *, unit: str = "", low_open: bool = False
) -> Callable[[str], float]:
    """An argument type: a number in [low, high] (`low_open`: in (low, high]), `unit` named in
    the error."""
    bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]{f' {unit}' if unit else ''}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        inside = low < value <= high if low_open else low <= value <= high
        if not inside:
            raise argparse.ArgumentTypeError(f"must be in {bounds}, got {text}")
        return value

    return parse


class Isolation(Protocol):
    """The options of a benchmark that runs on a Redis database and a database it isolates."""

    @property
    def redis_url(self) -> str: ...
    @property
    def flush(self) -> bool: ...
    @property
    def shared_redis(self) -> bool: ...
    @property
    def database_url(self) -> str: ...
    @property
    def use_database(self) -> str | None: ...


def add_isolation_arguments(parser: argparse.ArgumentParser) -> None:
    """--redis-url, --flush | --shared-redis, --database-url | --use-database (`Isolation`)."""
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help=f"a Redis database for the benchmark alone ({DEFAULT_REDIS_URL})",
    )
    redis_mode = parser.add_mutually_exclusive_group()
    redis_mode.add_argument(
        "--flush", action="store_true", help="empty the Redis database first if it holds keys"
    )
    redis_mode.add_argument(
        "--shared-redis",
        action="store_true",
        help="use the Redis database as it is (no emptiness check); delete only the "
        "benchmark's own keys at the end instead of flushing it",
    )
    database = parser.add_mutually_exclusive_group()
    database.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="a PostgreSQL server URL (a fresh database is created there and dropped after), "
        f"or 'sqlite' for a temporary SQLite file ({DEFAULT_DATABASE_URL})",
    )
    database.add_argument(
        "--use-database",
        metavar="URL",
        help="use this already-migrated database; only the benchmark's rows are deleted after",
    )


def describe_isolation(options: Isolation) -> str:
    """The Redis database and the database a run uses, for its description."""
    if options.use_database is not None:
        database = "the given database (--use-database)"
    elif options.database_url == "sqlite":
        database = "a temporary SQLite file"
    else:
        database = "a fresh PostgreSQL database"
    return f"Redis {redacted(options.redis_url)}, {database}"


def add_database_server_argument(parser: argparse.ArgumentParser) -> None:
    """--database-url of the benchmarks that seed a fresh PostgreSQL database by COPY."""
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="a PostgreSQL server URL; a fresh database is created there and dropped after "
        f"({DEFAULT_DATABASE_URL})",
    )


# -- a database of its own ----------------------------------------------------------------------


def migrate(database_url: str) -> None:
    """`alembic upgrade head` on `database_url` (blocking: run it in a thread)."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


async def execute(dsn: str, sql: str) -> None:
    """One statement on a connection of its own (`dsn`: a plain postgresql:// URL)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def created_database(server: URL, prefix: str) -> AsyncIterator[str]:
    """A new database `<prefix><random>` on the PostgreSQL `server`, migrated; its
    postgresql+asyncpg URL; dropped at the end."""
    admin_dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    await execute(admin_dsn, f'CREATE DATABASE "{name}"')
    try:
        url = server.set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False
        )
        await asyncio.to_thread(migrate, url)
        yield url
    finally:
        await execute(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def fresh_database(database_url: str) -> AsyncIterator[str]:
    """A migrated database for this run: `vkp_bench_<random>` on the PostgreSQL server
    `database_url`, or a temporary SQLite file for 'sqlite'; gone at the end."""
    if database_url == "sqlite":
        directory = tempfile.mkdtemp(prefix="vkp_bench_")
        try:
            url = f"sqlite+aiosqlite:///{directory}/bench.db"
            await asyncio.to_thread(migrate, url)
            yield url
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    try:
        server = make_url(database_url)
    except ArgumentError:
        raise BenchError(f"--database-url: not a URL: {database_url!r}") from None
    if not server.drivername.startswith("postgres"):
        raise BenchError("--database-url: give a PostgreSQL server URL or 'sqlite'")
    async with created_database(server, "vkp_bench_") as url:
        yield url


# -- output and main ----------------------------------------------------------------------------


def text_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Collection[int]
) -> str:
    """A text table: `headers`, a rule, `rows`; the columns numbered in `right` aligned right,
    the others left."""
    widths = [
        max(len(header), *(len(row[index]) for row in rows)) for index, header in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        return " | ".join(
            value.rjust(width) if index in right else value.ljust(width)
            for index, (value, width) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    rule = "-+-".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


@dataclass(frozen=True)
class Failed:
    """A run that did not finish: the exit code `main` returns."""

    exit_code: int


def run_main(
    description: str, main: Coroutine[Any, Any, T], *errors: type[Exception]
) -> T | Failed:
    """Note what the run does, run `main`; an interruption exits 130, a `BenchError`, an
    `OSError`, a database error (or one of `errors`) is printed and exits 1."""
    note(f"bench: {description}")
    try:
        return asyncio.run(main)
    except (KeyboardInterrupt, asyncio.CancelledError):
        note("bench: interrupted")
        return Failed(130)
    except (BenchError, OSError, asyncpg.PostgresError, SQLAlchemyError, *errors) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return Failed(1)
