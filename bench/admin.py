"""Admin benchmark: comment reports of one community at two sizes, and a database backup.

Run it from the repository root: `python -m bench.admin`; `--help` lists the flags.

What it measures:

* reports: `src.reports.service.generate_report` (the domain function the `generate_report` task
  calls: collect the SQL aggregates, stream the stored analyses into lemma counters, render,
  store the report row) called directly, with a sessionmaker on the benchmark's database and,
  as the worker passes it, a `MorphAnalyzer` (built-in default settings; `--no-analyzer` passes
  None, as a worker without the comments package's start-up hook would). For two communities,
  one of `--comments` comments and one of `--small` (a tenth of them by default), and for each
  format (json, csv, html) the table shows:
  - wall time of the call (a run of its own, without tracemalloc, which slows Python code);
  - traced peak: the most memory Python's allocator held at once during the call, above what it
    held when the call began (`tracemalloc`, started just before the call and stopped after it,
    in a second run of the same call). This is the number that shows whether memory grows with
    the community: the analyses are streamed in chunks, so it should stay flat from the small
    community to the big one;
  - RSS growth: how far the process' resident set rose above its level at the call's start,
    sampled every 5 ms from /proc/self/statm during the untraced run. It includes what
    tracemalloc cannot see (C libraries' own buffers), but memory that earlier calls freed is
    reused without growing the RSS, so it only tells whether a call needed more than the
    process already had (the calls run small community first, then the big one). `n/a` where
    /proc is missing. The peak RSS of the whole run (`ru_maxrss`, seeding included) is printed
    after the table;
  - the report's size in bytes (as stored).
  Before the measured calls one untimed report of the small community warms up the analyzer's
  parse cache, SQLAlchemy's statement cache and the imports of the renderers. A second table
  splits each call's wall time into the report's stages, timed from its `progress` callbacks.
  Each report's totals are checked against what was seeded.
* backup: `src.maintenance.backup.backup_database` (`pg_dump --format=custom`) of the whole
  benchmark database (both communities), into a temporary directory removed afterwards: wall
  time and file size beside the database's own size. Skipped, with a line saying so, if pg_dump
  is not on PATH; a failing pg_dump (e.g. older than the server) is reported, not fatal.

The data (seeded, not measured; its time is printed): every community has `--posts` posts spread
over `--days` days up to 2026-01-01 UTC; its comments go to the posts Zipf-wise (a few popular
posts), dated a few days (exponentially) after their post, by `comments / --comments-per-author`
distinct authors drawn Zipf-wise (1% by the community itself), 3% deleted (no text; half of them
without an author), 30% of them replies in a post's latest thread. Every comment has 5-15 words
drawn Zipf-wise from a vocabulary of `--vocabulary` lemmas: the commonest Russian function words
first (stop words, which the report must skip), then about 250 everyday lemmas (those of
`bench.morphology`), then generated Russian-like words. A fraction `--analysed` of the
comments with text has a stored analysis (`comment_analyses`) whose `lemma_counts` are its
words' counts, as `analyze_text` stores them (the words stand for their own lemmas). Rows go in
with COPY (`asyncpg.copy_records_to_table`), in chunks, then the tables are VACUUM ANALYZEd, as
a database in service would be. The same `--seed` gives the same data.

Isolation, as in `bench.queue` (whose helper this reuses): a PostgreSQL database
`vkp_bench_<random>` is created on the `--database-url` server, migrated, and dropped at the end,
error or not. Redis is not used. `--explain` prints the plan (`EXPLAIN (ANALYZE, BUFFERS)`) of
every SELECT one JSON report of the big community runs.
"""

# Russian vocabulary: Cyrillic letters that look like Latin ones are meant.

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bench._common import (
    BenchError,
    Failed,
    add_database_server_argument,
    fresh_database,
    note,
    number_in,
    positive_int,
    redacted,
    run_main,
    text_table,
)
from bench.morphology import ADJECTIVES, FREQUENT_FUNCTION_WORDS, NOUNS, VERBS
from src.database import create_engine, create_sessionmaker
from src.maintenance.backup import backup_database
from src.maintenance.config import BackupSettings
from src.maintenance.exceptions import BackupFailed, BackupTimedOut, BackupToolMissing
from src.morphology.analyzer import MorphAnalyzer
from src.reports.schemas import ReportFormat
from src.reports.service import generate_report

FORMATS = (ReportFormat.JSON, ReportFormat.CSV, ReportFormat.HTML)
SMALL_GROUP, BIG_GROUP = 101, 102
END = datetime(2026, 1, 1, tzinfo=UTC)  # the newest comment is older than this
AUTHOR_BASE = 1_000_000  # author ids: AUTHOR_BASE + rank
CHUNK = 10_000  # comments generated and copied per COPY
WORDS = (5, 15)  # words per comment
DELETED = 0.03
REPLIES = 0.30
COMMUNITY_ANSWERS = 0.01
MEAN_COMMENT_DELAY_DAYS = 2.0
ENGINE_TIMEOUT = 60.0  # connect timeout; statements get max(this, 30) s (src.database)
BACKUP_TIMEOUT = 3600.0
RSS_INTERVAL = 0.005
MIB = 1024 * 1024
COMMENT_COLUMNS = (
    "owner_id",
    "comment_id",
    "post_id",
    "from_id",
    "date",
    "text",
    "search_text",
    "likes",
    "reply_to_user",
    "reply_to_comment",
    "parent_comment_id",
    "thread_count",
    "is_deleted",
    "attachments",
    "first_seen_at",
    "updated_at",
)
ANALYSIS_COLUMNS = (
    "owner_id",
    "comment_id",
    "text_hash",
    "word_count",
    "has_cyrillic",
    "lemma_counts",
    "pos_counts",
    "details",
    "analyzed_at",
)
POST_COLUMNS = (
    "owner_id",
    "post_id",
    "from_id",
    "date",
    "text",
    "comments_count",
    "likes",
    "reposts",
    "views",
    "is_pinned",
    "fetched_at",
)
DETAILS = json.dumps({"numbers": [], "mentions": [], "links": [], "hashtags": []})


# -- options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    comments: int
    small: int
    posts: int
    days: int
    comments_per_author: int
    analysed: float
    vocabulary: int
    seed: int
    analyzer: bool
    explain: bool
    database_url: str


_fraction = number_in(0, 1)


def _vocabulary_size(text: str) -> int:
    value = positive_int(text)
    if value < 100:
        raise argparse.ArgumentTypeError(f"at least 100 lemmas, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.admin",
        description="Wall time, memory and size of comment reports (json, csv, html) of a "
        "community at two sizes, and of a pg_dump backup, on a seeded database of its own.",
    )
    parser.add_argument(
        "--comments",
        type=positive_int,
        default=200_000,
        metavar="N",
        help="comments of the big community (200000)",
    )
    parser.add_argument(
        "--small",
        type=positive_int,
        metavar="N",
        help="comments of the small community (a tenth of --comments)",
    )
    parser.add_argument(
        "--posts", type=positive_int, default=500, help="posts of each community (500)"
    )
    parser.add_argument(
        "--days", type=positive_int, default=365, help="days the posts are spread over (365)"
    )
    parser.add_argument(
        "--comments-per-author",
        type=positive_int,
        default=10,
        metavar="N",
        help="comments / distinct authors, in each community (10)",
    )
    parser.add_argument(
        "--analysed",
        type=_fraction,
        default=0.5,
        metavar="F",
        help="fraction of the comments with text that have a stored analysis (0.5)",
    )
    parser.add_argument(
        "--vocabulary",
        type=_vocabulary_size,
        default=3000,
        metavar="N",
        help="distinct lemmas the comments are written with (3000)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the data (1)")
    parser.add_argument(
        "--no-analyzer",
        dest="analyzer",
        action="store_false",
        help="pass no MorphAnalyzer (keywords not filtered by part of speech)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="print EXPLAIN (ANALYZE, BUFFERS) of the SELECTs of a JSON report of the big "
        "community",
    )
    add_database_server_argument(parser)
    args = parser.parse_args(argv)
    small = args.small if args.small is not None else max(1, args.comments // 10)
    if small > args.comments:
        parser.error(f"--small ({small}) must not exceed --comments ({args.comments})")
    if args.database_url == "sqlite" or not args.database_url.startswith("postgres"):
        parser.error("--database-url: give a PostgreSQL server URL (the data is seeded by COPY)")
    return Options(
        comments=args.comments,
        small=small,
        posts=args.posts,
        days=args.days,
        comments_per_author=args.comments_per_author,
        analysed=args.analysed,
        vocabulary=args.vocabulary,
        seed=args.seed,
        analyzer=args.analyzer,
        explain=args.explain,
        database_url=args.database_url,
    )


# -- the data ---------------------------------------------------------------------------------

_CONSONANTS = "бвгдждзклмнпрстфхцчшщ"
_VOWELS = "аеиоуыяю"
_ENDINGS = ("", "а", "о", "ка", "ник", "ость", "ение", "ство", "ый", "ать", "ить", "ец", "ина")


@dataclass(frozen=True)
class Vocabulary:
    words: list[str]
    pos: list[str]
    cum_weights: list[float]  # Zipf over the ranks: the words are commonest first


def build_vocabulary(size: int, rng: random.Random) -> Vocabulary:
    """Function words, then everyday lemmas, then generated Russian-like words; Zipf-weighted."""
    words: dict[str, str] = {}
    for word in FREQUENT_FUNCTION_WORDS:
        words.setdefault(word, "CONJ")
    everyday = [(w, "NOUN") for w in NOUNS] + [(w, "ADJF") for w in ADJECTIVES]
    everyday += [(w, "INFN") for w in VERBS]
    rng.shuffle(everyday)
    for word, pos in everyday:
        words.setdefault(word, pos)
    while len(words) < size:
        root = "".join(
            rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(rng.randint(1, 3))
        )
        words.setdefault(root + rng.choice(_ENDINGS), "NOUN")
    chosen = list(words.items())[:size]
    return Vocabulary(
        words=[word for word, _ in chosen],
        pos=[pos for _, pos in chosen],
        cum_weights=list(accumulate(1 / rank for rank in range(1, len(chosen) + 1))),
    )


@dataclass(frozen=True)
class Community:
    group_id: int
    comments: int
    label: str


@dataclass
class Seeded:
    """What one community holds, to check the reports' totals against."""

    comments: int = 0
    deleted: int = 0
    analysed: int = 0  # of the comments not deleted
    authors: set[int] = field(default_factory=set)
    posts: set[int] = field(default_factory=set)  # posts with comments


def _zipf_cum(count: int, exponent: float) -> list[float]:
    return list(accumulate(1 / rank**exponent for rank in range(1, count + 1)))


def _post_rows(community: Community, options: Options, rng: random.Random) -> list[tuple[Any, ...]]:
    span = options.days * 86400
    dates = sorted(END - timedelta(seconds=rng.uniform(1, span)) for _ in range(options.posts))
    return [
        (
            -community.group_id,
            post_id,
            -community.group_id,
            posted_at,
            f"Пост {post_id}: " + "новости района " * rng.randint(1, 20),
            0,
            rng.randint(0, 500),
            rng.randint(0, 50),
            rng.randint(100, 50_000),
            False,
            END,
        )
        for post_id, posted_at in enumerate(dates, 1)
    ]


def _comment_chunks(
    community: Community,
    options: Options,
    vocabulary: Vocabulary,
    post_dates: list[datetime],
    rng: random.Random,
    seeded: Seeded,
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """(comment rows, analysis rows), `CHUNK` comments at a time."""
    owner_id = -community.group_id
    post_ids = list(range(1, len(post_dates) + 1))
    rng.shuffle(post_ids)  # popularity does not follow the post's age
    post_cum = _zipf_cum(len(post_ids), 0.8)
    authors = max(1, community.comments // options.comments_per_author)
    author_cum = _zipf_cum(authors, 1.0)
    last_top_level: dict[int, int] = {}
    words, pos, word_cum = vocabulary.words, vocabulary.pos, vocabulary.cum_weights
    indices = range(len(words))
    for start in range(0, community.comments, CHUNK):
        count = min(CHUNK, community.comments - start)
        posts = rng.choices(post_ids, cum_weights=post_cum, k=count)
        ranks = rng.choices(range(authors), cum_weights=author_cum, k=count)
        comments: list[tuple[Any, ...]] = []
        analyses: list[tuple[Any, ...]] = []
        for offset in range(count):
            comment_id = start + offset + 1
            post_id = posts[offset]
            delay = timedelta(days=rng.expovariate(1 / MEAN_COMMENT_DELAY_DAYS))
            date = min(post_dates[post_id - 1] + delay, END - timedelta(seconds=1))
            from_id: int | None = AUTHOR_BASE + ranks[offset]
            if rng.random() < COMMUNITY_ANSWERS:
                from_id = owner_id
            deleted = rng.random() < DELETED
            text = ""
            chosen: list[int] = []
            if deleted:
                if rng.random() < 0.5:
                    from_id = None
            else:
                chosen = rng.choices(indices, cum_weights=word_cum, k=rng.randint(*WORDS))
                text = " ".join(words[index] for index in chosen)
            parent = last_top_level.get(post_id)
            if parent is not None and rng.random() < REPLIES:
                reply_to: int | None = parent
            else:
                reply_to = None
                last_top_level[post_id] = comment_id
            comments.append(
                (
                    owner_id,
                    comment_id,
                    post_id,
                    from_id,
                    date,
                    text,
                    text.casefold(),
                    rng.randint(0, 20),
                    None,
                    reply_to,
                    reply_to,
                    0,
                    deleted,
                    "[]",
                    date,
                    date,
                )
            )
            seeded.comments += 1
            seeded.deleted += deleted
            if from_id is not None:
                seeded.authors.add(from_id)
            if chosen and rng.random() < options.analysed:
                lemma_counts = Counter(words[index] for index in chosen)
                pos_counts = Counter(pos[index] for index in chosen)
                analyses.append(
                    (
                        owner_id,
                        comment_id,
                        hashlib.sha256(text.encode()).hexdigest(),
                        len(chosen),
                        True,
                        json.dumps(lemma_counts, ensure_ascii=False),
                        json.dumps(pos_counts),
                        DETAILS,
                        date + timedelta(hours=1),
                    )
                )
                seeded.analysed += 1
        seeded.posts.update(posts)
        yield comments, analyses


async def seed(url: str, options: Options, communities: Sequence[Community]) -> dict[int, Seeded]:
    """Fill the (migrated, empty) database: communities, posts, comments, analyses."""
    rng = random.Random(options.seed)
    vocabulary = build_vocabulary(options.vocabulary, rng)
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=10)
    seeded: dict[int, Seeded] = {}
    try:
        for community in communities:
            owner_id = -community.group_id
            await conn.execute(
                "INSERT INTO communities (id, screen_name, name, is_closed, created_at, "
                "updated_at) VALUES ($1, $2, $3, 0, $4, $4)",
                community.group_id,
                f"bench_{community.label}",
                f"Benchmark community ({community.label})",
                END,
            )
            posts = _post_rows(community, options, rng)
            await conn.copy_records_to_table("posts", records=posts, columns=POST_COLUMNS)
            stats = seeded[community.group_id] = Seeded()
            chunks = _comment_chunks(
                community, options, vocabulary, [row[3] for row in posts], rng, stats
            )
            for comments, analyses in chunks:
                await conn.copy_records_to_table(
                    "comments", records=comments, columns=COMMENT_COLUMNS
                )
                await conn.copy_records_to_table(
                    "comment_analyses", records=analyses, columns=ANALYSIS_COLUMNS
                )
            await conn.execute(
                "UPDATE posts p SET comments_count = c.n FROM (SELECT post_id, count(*) AS n "
                "FROM comments WHERE owner_id = $1 GROUP BY post_id) c "
                "WHERE p.owner_id = $1 AND p.post_id = c.post_id",
                owner_id,
            )
    finally:
        await conn.close()
    return seeded


async def vacuum_analyze(url: str) -> None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(
            "VACUUM (ANALYZE) communities, posts, comments, comment_analyses",
            timeout=BACKUP_TIMEOUT,
        )
    finally:
        await conn.close()


# -- measuring --------------------------------------------------------------------------------


def _rss() -> int | None:
    """The process' resident set in bytes, or None without /proc."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class RssSampler:
    """The highest RSS seen, every `RSS_INTERVAL` s in a thread, above the level at the start."""

    def __init__(self) -> None:
        self.baseline = _rss()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(RSS_INTERVAL):
            self._take()

    def _take(self) -> None:
        rss = _rss()
        if rss is not None and self.peak is not None and rss > self.peak:
            self.peak = rss

    def __enter__(self) -> RssSampler:
        if self.baseline is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._take()

    @property
    def growth(self) -> int | None:
        if self.baseline is None or self.peak is None:
            return None
        return self.peak - self.baseline


@dataclass
class Call:
    """One measured report."""

    community: Community
    report_format: ReportFormat
    seconds: float = 0.0
    stages: list[tuple[str, float]] = field(default_factory=list)  # (stage, seconds)
    size_bytes: int = 0
    rss_growth: int | None = None
    traced_peak: int = 0
    traced_seconds: float = 0.0


def _stage_name(message: str | None, report_format: ReportFormat) -> str:
    text = message or ""
    if text.startswith("storing"):
        return f"storing the report ({report_format.value})"
    if text.startswith("rendering"):
        return f"rendering {report_format.value}"
    return text


async def _report(
    sessionmaker: async_sessionmaker[AsyncSession],
    community: Community,
    report_format: ReportFormat,
    *,
    analyzer: MorphAnalyzer | None,
    run: str,
) -> tuple[dict[str, Any], float, list[tuple[str, float]]]:
    """One `generate_report` call: its result, wall seconds and stages (name, seconds)."""
    marks: list[tuple[str, float]] = []

    async def progress(percent: float, message: str | None) -> None:
        marks.append((_stage_name(message, report_format), time.perf_counter()))

    started = time.perf_counter()
    result = await generate_report(
        sessionmaker,
        report_id=f"bench-{community.label}-{report_format.value}-{run}",
        group_id=community.group_id,
        report_format=report_format,
        analyzer=analyzer,
        progress=progress,
    )
    ended = time.perf_counter()
    points = [("looking up the job's owner", started), *marks, ("", ended)]
    stages = [(name, points[i + 1][1] - at) for i, (name, at) in enumerate(points[:-1])]
    return result, ended - started, stages


def _check(result: dict[str, Any], community: Community, seeded: Seeded) -> None:
    totals = result["totals"]
    expected = {
        "comments": seeded.comments,
        "deleted": seeded.deleted,
        "analysed": seeded.analysed,
        "authors": len(seeded.authors),
        "posts": len(seeded.posts),
    }
    wrong = {key: (totals[key], value) for key, value in expected.items() if totals[key] != value}
    if wrong:
        raise BenchError(
            f"the {community.label} community's report disagrees with the data seeded "
            f"(totals: (report, seeded)): {wrong}"
        )


async def measure_reports(
    sessionmaker: async_sessionmaker[AsyncSession],
    communities: Sequence[Community],
    seeded: dict[int, Seeded],
    *,
    analyzer: MorphAnalyzer | None,
) -> list[Call]:
    """Every community x format: an untraced run (time, RSS), then a traced run (memory)."""
    note("bench: warming up (one untimed report of the small community)")
    await _report(sessionmaker, communities[0], ReportFormat.JSON, analyzer=analyzer, run="warm")
    calls = [Call(community, fmt) for community in communities for fmt in FORMATS]
    for call in calls:
        note(f"bench: {call.community.comments} comments, {call.report_format.value}: timing")
        gc.collect()
        with RssSampler() as rss:
            result, call.seconds, call.stages = await _report(
                sessionmaker, call.community, call.report_format, analyzer=analyzer, run="timed"
            )
        _check(result, call.community, seeded[call.community.group_id])
        call.size_bytes = int(result["size_bytes"])
        call.rss_growth = rss.growth
    for call in calls:
        note(f"bench: {call.community.comments} comments, {call.report_format.value}: tracing")
        gc.collect()
        tracemalloc.start()
        try:
            result, call.traced_seconds, _ = await _report(
                sessionmaker, call.community, call.report_format, analyzer=analyzer, run="traced"
            )
            _, call.traced_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        _check(result, call.community, seeded[call.community.group_id])
    return calls


@contextmanager
def recorded_statements(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """The (statement, parameters) the engine sends while the block runs."""
    statements: list[tuple[str, Any]] = []

    def record(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        statements.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def explain_report(
    url: str,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    community: Community,
    *,
    analyzer: MorphAnalyzer | None,
) -> list[tuple[str, str]]:
    """(statement, plan) of every SELECT a JSON report of `community` runs."""
    with recorded_statements(engine) as statements:
        await _report(sessionmaker, community, ReportFormat.JSON, analyzer=analyzer, run="explain")
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=10)
    plans: list[tuple[str, str]] = []
    try:
        for statement, parameters in statements:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            rows = await conn.fetch(
                f"EXPLAIN (ANALYZE, BUFFERS) {statement}",
                *(parameters or ()),
                timeout=BACKUP_TIMEOUT,
            )
            plans.append((statement, "\n".join(row[0] for row in rows)))
    finally:
        await conn.close()
    return plans


@dataclass(frozen=True)
class BackupResult:
    seconds: float = 0.0
    duration_ms: int = 0
    size_bytes: int = 0
    database_bytes: int = 0
    skipped: str | None = None  # why there is no measurement


async def database_size(url: str) -> int:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()


def _file_size(path: str) -> int:
    return Path(path).stat().st_size


async def measure_backup(url: str) -> BackupResult:
    """`backup_database` into a temporary directory (removed after): wall time and size."""
    database_bytes = await database_size(url)
    if shutil.which("pg_dump") is None:
        return BackupResult(
            database_bytes=database_bytes, skipped="pg_dump not found on PATH: backup skipped"
        )
    with tempfile.TemporaryDirectory(prefix="vkp_bench_backup_") as directory:
        settings = BackupSettings(
            dir=Path(directory), keep=1, pg_dump="pg_dump", timeout=BACKUP_TIMEOUT
        )
        started = time.perf_counter()
        try:
            report = await backup_database(url, settings=settings)
        except (BackupFailed, BackupTimedOut, BackupToolMissing) as exc:
            return BackupResult(database_bytes=database_bytes, skipped=f"backup failed: {exc}")
        seconds = time.perf_counter() - started
        size = _file_size(report.path)
    if size != report.size_bytes:
        raise BenchError(f"the backup reports {report.size_bytes} bytes, its file has {size}")
    return BackupResult(
        seconds=seconds,
        duration_ms=report.duration_ms,
        size_bytes=size,
        database_bytes=database_bytes,
    )


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Result:
    options: Options
    database: str
    communities: list[Community]
    seeded: dict[int, Seeded]
    seed_seconds: float
    vacuum_seconds: float
    analyzer_seconds: float
    calls: list[Call]
    plans: list[tuple[str, str]]
    backup: BackupResult
    max_rss: int  # bytes, the whole run's


def _communities(options: Options) -> list[Community]:
    return [
        Community(SMALL_GROUP, options.small, "small"),
        Community(BIG_GROUP, options.comments, "big"),
    ]


@asynccontextmanager
async def _engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url, timeout=ENGINE_TIMEOUT)
    try:
        yield engine
    finally:
        await engine.dispose()


async def run(options: Options) -> Result:
    communities = _communities(options)
    async with fresh_database(options.database_url) as url:
        database = make_url(url).database or ""
        note(f"bench: database {database} created and migrated")
        total = sum(community.comments for community in communities)
        note(f"bench: seeding {total} comments...")
        started = time.perf_counter()
        seeded = await seed(url, options, communities)
        seed_seconds = time.perf_counter() - started
        started = time.perf_counter()
        await vacuum_analyze(url)
        vacuum_seconds = time.perf_counter() - started
        note(f"bench: seeded in {seed_seconds:.1f} s, VACUUM ANALYZE {vacuum_seconds:.1f} s")
        started = time.perf_counter()
        analyzer = MorphAnalyzer() if options.analyzer else None
        if analyzer is not None:
            analyzer.parse_word("дом")  # loads the dictionaries
        analyzer_seconds = time.perf_counter() - started
        gc.collect()
        async with _engine(url) as engine:
            sessionmaker = create_sessionmaker(engine)
            calls = await measure_reports(sessionmaker, communities, seeded, analyzer=analyzer)
            plans: list[tuple[str, str]] = []
            if options.explain:
                plans = await explain_report(
                    url, engine, sessionmaker, communities[-1], analyzer=analyzer
                )
        note("bench: backing up")
        backup = await measure_backup(url)
    return Result(
        options=options,
        database=database,
        communities=communities,
        seeded=seeded,
        seed_seconds=seed_seconds,
        vacuum_seconds=vacuum_seconds,
        analyzer_seconds=analyzer_seconds,
        calls=calls,
        plans=plans,
        backup=backup,
        max_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
    )


# -- output -----------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """A text table; the first `left` columns are aligned left, the others right."""
    return text_table(headers, rows, right=range(left, len(headers)))


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.1f}"


def describe(options: Options) -> str:
    return (
        f"communities of {options.small} and {options.comments} comments, {options.posts} "
        f"posts over {options.days} days each, {options.comments_per_author} comments per "
        f"author, {options.analysed:g} of the comments analysed, {options.vocabulary} lemmas; "
        f"{'MorphAnalyzer' if options.analyzer else 'no analyzer'}; a fresh PostgreSQL "
        f"database on {redacted(options.database_url)}"
    )


def format_data(result: Result) -> str:
    lines = []
    for community in result.communities:
        seeded = result.seeded[community.group_id]
        lines.append(
            f"{community.label} community: {seeded.comments} comments ({seeded.deleted} "
            f"deleted), {seeded.analysed} analysed, {len(seeded.authors)} authors, "
            f"{len(seeded.posts)} posts commented"
        )
    lines.append(
        f"seeding (not measured): {result.seed_seconds:.1f} s of COPY, "
        f"{result.vacuum_seconds:.1f} s of VACUUM ANALYZE; analyzer loaded in "
        f"{result.analyzer_seconds:.1f} s"
    )
    return "\n".join(lines)


def format_reports(result: Result) -> str:
    rows = [
        (
            str(call.community.comments),
            call.report_format.value,
            f"{call.seconds:.2f}",
            _mib(call.traced_peak),
            _mib(call.rss_growth),
            str(call.size_bytes),
        )
        for call in result.calls
    ]
    return _table(
        ("comments", "format", "wall s", "traced peak MiB", "RSS growth MiB", "report bytes"),
        rows,
        left=2,
    )


def format_growth(result: Result) -> str:
    """Big over small, per format: what a tenfold community costs."""
    small, big = result.communities
    if small.comments == big.comments:
        return ""
    by_key = {(c.community.group_id, c.report_format): c for c in result.calls}
    lines = [
        f"from {small.comments} to {big.comments} comments (x{big.comments / small.comments:g}):"
    ]
    for fmt in FORMATS:
        a, b = by_key[(small.group_id, fmt)], by_key[(big.group_id, fmt)]
        time_ratio = b.seconds / a.seconds if a.seconds else float("inf")
        peak_ratio = b.traced_peak / a.traced_peak if a.traced_peak else float("inf")
        lines.append(
            f"  {fmt.value}: wall x{time_ratio:.1f}, traced peak x{peak_ratio:.2f} "
            f"({_mib(a.traced_peak)} -> {_mib(b.traced_peak)} MiB), size "
            f"{a.size_bytes} -> {b.size_bytes} bytes"
        )
    traced = statistics.median(c.traced_seconds / c.seconds for c in result.calls if c.seconds)
    lines.append(
        f"(the traced runs took x{traced:.1f} the untraced ones' time, median; process peak "
        f"RSS over the whole run, seeding included: {_mib(result.max_rss)} MiB)"
    )
    return "\n".join(lines)


def format_stages(result: Result) -> str:
    """Seconds per stage of each community's calls (collection stages: the JSON call's)."""
    names: list[str] = []
    seconds: dict[tuple[str, int], float] = {}
    for call in result.calls:
        for name, spent in call.stages:
            shared = not name.startswith(("rendering", "storing"))
            if shared and call.report_format is not ReportFormat.JSON:
                continue
            if name not in names:
                names.append(name)
            seconds[(name, call.community.group_id)] = spent
    headers = ("stage", *(f"{c.label}: {c.comments} comments" for c in result.communities))
    rows = [
        (
            name,
            *(
                f"{seconds[(name, c.group_id)]:.3f}" if (name, c.group_id) in seconds else ""
                for c in result.communities
            ),
        )
        for name in names
    ]
    return _table(headers, rows)


def format_backup(result: Result) -> str:
    backup = result.backup
    database = f"database size (pg_database_size): {_mib(backup.database_bytes)} MiB"
    if backup.skipped is not None:
        return f"backup_database: {backup.skipped}\n{database}"
    total = sum(s.comments for s in result.seeded.values())
    rows = [
        ("database", f"{total} comments, {_mib(backup.database_bytes)} MiB on the server"),
        ("wall time", f"{backup.seconds:.2f} s ({backup.duration_ms} ms as it reports)"),
        (
            "file (pg_dump --format=custom)",
            f"{backup.size_bytes} bytes ({_mib(backup.size_bytes)} MiB, "
            f"{backup.size_bytes / backup.database_bytes:.0%} of the database)",
        ),
        ("throughput", f"{backup.database_bytes / MIB / backup.seconds:.1f} MiB/s of database"),
    ]
    return _table(("backup_database", "value"), rows, left=2)


def format_plans(result: Result) -> str:
    parts = [f"EXPLAIN (ANALYZE, BUFFERS) of the JSON report of {result.communities[-1].comments}"]
    for statement, plan in result.plans:
        parts.append("\n" + " ".join(statement.split()))
        parts.append(plan)
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    outcome = run_main(describe(options), run(options))
    if isinstance(outcome, Failed):
        return outcome.exit_code
    result = outcome
    print(describe(options))
    print(format_data(result))
    print()
    print(
        "generate_report (collect + render + store), one call each; wall s untraced; traced "
        "peak: tracemalloc, above the call's start; RSS growth: sampled, above the call's start"
    )
    print(format_reports(result))
    growth = format_growth(result)
    if growth:
        print()
        print(growth)
    print()
    print("where the time went (s), from the report's progress callbacks")
    print(format_stages(result))
    print()
    print(format_backup(result))
    if result.plans:
        print()
        print(format_plans(result))
    return 0


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
