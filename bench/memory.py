"""Memory benchmark: keyword and batch tasks over communities of 100 000 and 1 000 000 comments.

Run it from the repository root: `python -m bench.memory`; `--help` lists the flags. It prints a
table: `comments | task | seconds | peak RSS MiB | RSS growth MiB | notes`.

What it measures: the real task functions of `src.comments.tasks`, called as the worker calls
them (a job context with a sessionmaker on the benchmark's database, the worker's
`MorphAnalyzer`, a progress callback that does nothing):

* `extract_keywords` of the whole community (plain frequency);
* `extract_keywords` of the community's older half (`until` = the median date), ranked by TF-IDF
  against the newest 20 000 comments of the other half;
* `process_batch_comments` with `morphology` (every comment's analysis stored) and `keywords`.

Memory: the peak resident set of the whole process during the call. Before each call the
kernel's high-water mark is reset (`/proc/self/clear_refs` = 5, Linux 4.0 and later); after it,
`VmHWM` from `/proc/self/status` is the call's peak (`resource.getrusage` reads the same mark).
"RSS growth" is that peak minus the RSS at the call's start: what the call itself needed. Where
the mark cannot be reset, a thread samples `/proc/self/statm` every 5 ms instead (the notes say
so). Flat memory is the goal: the growth should not depend on the number of comments.

The data (seeded, not measured; its time is printed): one community per size, its comments
spread over `--posts` posts and a year up to 2026-01-01, each of 5-35 words (20 on average)
drawn Zipf-wise from `bench.admin`'s vocabulary (Russian function words, everyday lemmas, then
made-up Russian-like words; `--vocabulary` in all), copied in with COPY. Before the measured
calls, one untimed batch over a small warm-up community fills the analyzer's parse cache and the
imports, so that the first measured call does not pay for them.

Isolation, as in `bench.queue` and `bench.admin`: a PostgreSQL database `vkp_bench_<random>` is
created on the `--database-url` server, migrated, and dropped at the end, error or not.
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, cast

import asyncpg
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench._common import (
    BenchError,
    Failed,
    add_database_server_argument,
    fresh_database,
    note,
    positive_int,
    redacted,
    run_main,
    text_table,
)
from bench.admin import COMMENT_COLUMNS, RssSampler, Vocabulary, _rss, build_vocabulary
from src.arq.context import JobContext
from src.comments.tasks import (
    BatchArgs,
    KeywordsArgs,
    extract_keywords,
    process_batch_comments,
)
from src.database import create_engine, create_sessionmaker
from src.morphology.analyzer import MorphAnalyzer

END = datetime(2026, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 365 * 86400
WORDS = (5, 35)  # words per comment, 20 on average
COPY_CHUNK = 10_000
WARM_UP_GROUP, FIRST_GROUP = 300, 301
MIB = 1024 * 1024
KIB = 1024


@dataclass(frozen=True)
class Options:
    sizes: tuple[int, ...]
    warm_up: int
    posts: int
    vocabulary: int
    seed: int
    database_url: str


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(positive_int(part) for part in text.split(",") if part.strip())
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"comma-separated positive counts: {exc}") from None
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one size")
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory",
        description="Seconds and peak RSS of extract_keywords and process_batch_comments over "
        "communities of N comments, on a seeded database of its own.",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=(100_000, 1_000_000),
        metavar="N,N",
        help="comments of each community (100000,1000000)",
    )
    parser.add_argument(
        "--warm-up",
        type=positive_int,
        default=5000,
        metavar="N",
        help="comments of the untimed warm-up community (5000)",
    )
    parser.add_argument("--posts", type=positive_int, default=1000, help="posts per community")
    parser.add_argument(
        "--vocabulary",
        type=positive_int,
        default=20_000,
        metavar="N",
        help="distinct lemmas the comments are written with (20000; at least 100)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the data (1)")
    add_database_server_argument(parser)
    args = parser.parse_args(argv)
    if args.vocabulary < 100:
        parser.error("--vocabulary: at least 100 lemmas")
    if not args.database_url.startswith("postgres"):
        parser.error("--database-url: give a PostgreSQL server URL (the data is seeded by COPY)")
    return Options(
        sizes=args.sizes,
        warm_up=args.warm_up,
        posts=args.posts,
        vocabulary=args.vocabulary,
        seed=args.seed,
        database_url=args.database_url,
    )


# -- the data ---------------------------------------------------------------------------------


def _comment_rows(
    group_id: int, start: int, count: int, options: Options, vocabulary: Vocabulary, rng: Any
) -> list[tuple[Any, ...]]:
    owner_id = -group_id
    words, cum = vocabulary.words, vocabulary.cum_weights
    rows = []
    for comment_id in range(start + 1, start + count + 1):
        text = " ".join(rng.choices(words, cum_weights=cum, k=rng.randint(*WORDS)))
        date = END - timedelta(seconds=rng.uniform(1, SPAN_SECONDS))
        rows.append(
            (
                owner_id,
                comment_id,
                rng.randint(1, options.posts),
                1_000_000 + rng.randint(1, 100_000),
                date,
                text,
                text.casefold(),
                0,
                None,
                None,
                None,
                0,
                False,
                "[]",
                date,
                date,
            )
        )
    return rows


async def seed(url: str, options: Options, communities: Sequence[tuple[int, int]]) -> None:
    """(group id, comments) each: rows by COPY, then VACUUM ANALYZE."""
    rng = random.Random(options.seed)
    vocabulary = build_vocabulary(options.vocabulary, rng)
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        for group_id, comments in communities:
            for start in range(0, comments, COPY_CHUNK):
                rows = _comment_rows(
                    group_id, start, min(COPY_CHUNK, comments - start), options, vocabulary, rng
                )
                await conn.copy_records_to_table("comments", records=rows, columns=COMMENT_COLUMNS)
        await conn.execute("VACUUM (ANALYZE) comments", timeout=3600)
    finally:
        await conn.close()


async def median_date(url: str, group_id: int) -> datetime:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        value = await conn.fetchval(
            "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY date) FROM comments "
            "WHERE owner_id = $1",
            -group_id,
        )
    finally:
        await conn.close()
    return cast(datetime, value)


# -- measuring --------------------------------------------------------------------------------


def _high_water_mark() -> int | None:
    """VmHWM in bytes, or None without /proc."""
    try:
        with open("/proc/self/status") as status:
            match = re.search(r"^VmHWM:\s+(\d+) kB", status.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match[1]) * KIB if match else None


def _reset_high_water_mark() -> bool:
    """Set the peak RSS back to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return _high_water_mark() is not None


@dataclass
class Measured:
    comments: int
    task: str
    seconds: float
    peak: int | None  # bytes
    growth: int | None  # bytes
    method: str
    notes: str


async def measure(
    comments: int, task: str, call: Callable[[], Awaitable[dict[str, Any]]]
) -> tuple[Measured, dict[str, Any]]:
    """One call: wall seconds and the process' peak RSS during it."""
    gc.collect()
    start_rss = _rss()
    if _reset_high_water_mark():
        started = time.perf_counter()
        result = await call()
        seconds = time.perf_counter() - started
        peak, method = _high_water_mark(), "VmHWM"
    else:
        with RssSampler() as sampler:
            started = time.perf_counter()
            result = await call()
            seconds = time.perf_counter() - started
        peak, method = sampler.peak, "sampled"
    growth = None if peak is None or start_rss is None else max(0, peak - start_rss)
    return Measured(comments, task, seconds, peak, growth, method, ""), result


def job_context(
    sessionmaker: async_sessionmaker[AsyncSession], analyzer: MorphAnalyzer, job_id: str
) -> JobContext:
    """What the worker hands a task (the parts these tasks read)."""

    async def progress(percent: float, message: str | None = None) -> None:
        return None

    ctx: dict[str, Any] = {
        "sessionmaker": sessionmaker,
        "morph": analyzer,
        "progress": progress,
        "job_id": job_id,
        "job_try": 1,
    }
    return cast(JobContext, ctx)


def _top(result: dict[str, Any], count: int = 3) -> str:
    return ", ".join(keyword["phrase"] for keyword in result["keywords"][:count])


async def run_cases(
    url: str, options: Options, analyzer: MorphAnalyzer
) -> tuple[list[Measured], float]:
    groups = [(FIRST_GROUP + index, size) for index, size in enumerate(options.sizes)]
    note(f"bench: seeding {options.warm_up + sum(options.sizes)} comments...")
    started = time.perf_counter()
    await seed(url, options, [(WARM_UP_GROUP, options.warm_up), *groups])
    seed_seconds = time.perf_counter() - started
    note(f"bench: seeded in {seed_seconds:.1f} s")
    engine = create_engine(url, timeout=60.0)
    rows: list[Measured] = []
    try:
        sessionmaker = create_sessionmaker(engine)
        note("bench: warming up")
        warm = BatchArgs(group_id=WARM_UP_GROUP, operations=["morphology", "keywords"])
        await process_batch_comments(job_context(sessionmaker, analyzer, "warm"), warm)
        for group_id, size in groups:
            ctx = job_context(sessionmaker, analyzer, f"bench-{group_id}")
            note(f"bench: {size} comments: extract_keywords of the community")
            row, result = await measure(
                size,
                "extract_keywords (all, frequency)",
                partial(extract_keywords, ctx, KeywordsArgs(group_id=group_id)),
            )
            _expect(result["documents"], size, row.task)
            row.notes = f"top: {_top(result)}"
            rows.append(row)

            until = await median_date(url, group_id)
            note(f"bench: {size} comments: extract_keywords of the older half")
            row, result = await measure(
                size,
                "extract_keywords (half, tf-idf)",
                partial(extract_keywords, ctx, KeywordsArgs(group_id=group_id, until=until)),
            )
            row.notes = f"{result['documents']} comments vs background; top: {_top(result)}"
            rows.append(row)

            note(f"bench: {size} comments: process_batch_comments (morphology, keywords)")
            batch = BatchArgs(group_id=group_id, operations=["morphology", "keywords"])
            row, result = await measure(
                size,
                "process_batch_comments",
                partial(process_batch_comments, ctx, batch),
            )
            _expect(result["analyses_stored"], size, row.task)
            row.notes = f"{size} analyses stored; top: {_top(result['keywords'])}"
            rows.append(row)
    finally:
        await engine.dispose()
    return rows, seed_seconds


def _expect(found: int, expected: int, task: str) -> None:
    if found != expected:
        raise BenchError(f"{task}: {found} comments processed, {expected} seeded")


async def run(options: Options) -> tuple[list[Measured], float]:
    analyzer = MorphAnalyzer()
    analyzer.parse_word("дом")  # loads the dictionaries before anything is measured
    async with fresh_database(options.database_url) as url:
        note(f"bench: database {make_url(url).database} created and migrated")
        return await run_cases(url, options, analyzer)


# -- output -----------------------------------------------------------------------------------


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.1f}"


def format_table(rows: Sequence[Measured]) -> str:
    headers = ("comments", "task", "seconds", "peak RSS MiB", "RSS growth MiB", "notes")
    cells = [
        (
            str(row.comments),
            row.task,
            f"{row.seconds:.1f}",
            _mib(row.peak),
            _mib(row.growth),
            row.notes if row.method == "VmHWM" else f"(RSS sampled) {row.notes}",
        )
        for row in rows
    ]
    return text_table(headers, cells, right={0, 2, 3, 4})


def describe(options: Options) -> str:
    sizes = " and ".join(f"{size:,}" for size in options.sizes)
    return (
        f"communities of {sizes} comments ({WORDS[0]}-{WORDS[1]} words each, {options.posts} "
        f"posts, {options.vocabulary} lemmas); a fresh PostgreSQL database on "
        f"{redacted(options.database_url)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    outcome = run_main(describe(options), run(options))
    if isinstance(outcome, Failed):
        return outcome.exit_code
    rows, seed_seconds = outcome
    print(describe(options))
    print(f"seeding (not measured): {seed_seconds:.1f} s")
    print(
        "peak RSS: the process' high-water mark during the call (VmHWM, reset before it); "
        "RSS growth: that peak above the RSS at the call's start"
    )
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
