"""VK ingest benchmark: comments/s from a rate-limited (fake) VK API into PostgreSQL.

Run it from the repository root: `python -m bench.vk_ingest`; `--help` lists the flags.

A fake VK API (`tests.vk.fake_server.FakeVK`, real HTTP on 127.0.0.1, served on this process'
event loop) holds one community of `--posts` posts with `--comments-per-post` top-level comments
each and `--replies` replies to every comment, and answers error 6 ("too many requests per
second") past `--rps` requests per rolling second, as VK does per token; `--latency` makes it
take that long over every `execute`, as VK does to run one (the fake answers in milliseconds,
and its handling runs on this process' event loop, so it counts in the round trips). The real
`parse_vk_comments` task reads it, run by an in-process `JobWorker` (the module's worker, built
from `worker_options(...)` with the app's task registry), whose VK client is pointed at the fake
through the environment (`VK_TOKEN`, `VK_API_URL`, `VK_REQUESTS_PER_SECOND`; every other `VK_`
variable, e.g. `VK_RATE_WINDOW_SLACK`, is left as it is, so variants can be measured). The job is
queued with `ArqService.enqueue_job` and followed with `get_job_status`.

It prints a table: comments stored (checked against the database), HTTP requests the server
recorded, wall time (the job's `finished_at - enqueued_at` in the job history), comments/s,
requests/s at the server and the most requests the server saw in any rolling second (which must
not exceed `--rps`: the exit code is 3 if it did), and the ceiling of the rate limit: 25 calls x
100 comments per `execute` x rps top-level comments/s (7500 at 3/s). Replies come inline, up to
10 per thread, in the same pages, so with `--replies` 1-10 the ceiling of all comments stored is
that many times higher again (the table shows both).

A second table says where the wall time went, measured by wrapping, for the run only,
`VKClient._acquire` (waiting for the shared rate limiter), `VKClient._send` (HTTP round trips,
answer parsing included), the fake server's ASGI app (its handling, on the same event loop, so
part of the round trips) and `src.comments.service.upsert_comments` (storage; commits are in
"the rest").

Defaults (20 posts x 1000 comments x 2 replies): every `execute` holds 25 full pages of 100
top-level comments, each with its 2 replies inline (7500 comments per request). The run makes
2 + 1 + 8 requests (community, wall, first pages, remaining pages).

Isolation, as in `bench.queue` (whose helpers this reuses): the benchmark claims a Redis database
of its own (`--redis-url`, db 14 by default; `--flush` empties a non-empty one) and flushes it at
the end, or with `--shared-redis` deletes only the keys it made. It creates a PostgreSQL database
`vkp_bench_<random>` on the `--database-url` server, migrates it and drops it at the end
(`--database-url sqlite`: a temporary SQLite file); with `--use-database URL` it uses that
already-migrated database and deletes only the rows it made (its job's history, its community,
posts and comments; the community id is random and checked to be unused).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, func, select

from bench._common import (
    BenchError,
    Failed,
    add_isolation_arguments,
    describe_isolation,
    int_from,
    note,
    number_in,
    positive_int,
    run_main,
    text_table,
)
from bench.queue import (
    Created,
    WorkerRun,
    _settings,
    isolated_database,
    isolated_redis,
    running_worker,
)
from src.arq.config import ArqSettings
from src.arq.pool import create_redis
from src.arq.schemas import JobStatus, JobStatusResponse
from src.arq.service import ArqService
from src.arq.tasks import registry as app_registry
from src.arq.worker import JobWorker, worker_options
from src.comments import service as comments_service
from src.comments.models import Comment, Community, Post
from src.config import Settings
from src.database import create_engine, create_sessionmaker
from src.vk.client import MAX_COUNT, VKClient
from src.vk.config import VKSettings
from src.vk.ratelimit import rate_key
from tests.vk.fake_server import FakeVK, Sleep, community_with_posts, serve

QUEUE = "bench:vk"
TASK = "parse_vk_comments"
# VK inlines at most this many replies of a thread in the thread's top-level comment.
INLINE_REPLIES = 10
MAX_POSTS = 10_000  # the task's `limit`
STATUS_POLL_SECONDS = 0.05
# How long the job may take: the expected requests at a third of the rate, plus this many
# seconds, plus a second per this many comments stored (far slower than today's storage).
JOB_SLACK_SECONDS = 120
JOB_COMMENTS_PER_SECOND = 250
# Community ids well above VK's real ones, so a shared database never holds them already.
COMMUNITY_IDS = (2_000_000_000, 2_100_000_000)
RATE_ERROR = 6  # VK's "too many requests per second"


# -- options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    posts: int
    comments_per_post: int
    replies: int
    rps: float
    latency: float
    redis_url: str
    flush: bool
    shared_redis: bool
    database_url: str
    use_database: str | None


_count = int_from(0, "must not be negative")


def _posts(text: str) -> int:
    value = positive_int(text)
    if value > MAX_POSTS:
        raise argparse.ArgumentTypeError(f"at most {MAX_POSTS} (the task's limit), got {value}")
    return value


_rate = number_in(0, 1000, unit="requests/s", low_open=True)
_latency = number_in(0, 5, unit="seconds")


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.vk_ingest",
        description="Comments/s ingested by parse_vk_comments from a fake VK API that enforces "
        "a per-token request rate, through an in-process worker, into the database.",
    )
    parser.add_argument("--posts", type=_posts, default=20, help="posts in the community (20)")
    parser.add_argument(
        "--comments-per-post",
        type=_count,
        default=1000,
        metavar="N",
        help="top-level comments per post (1000; multiples of 100 fill every page)",
    )
    parser.add_argument(
        "--replies",
        type=_count,
        default=2,
        metavar="N",
        help=f"replies to every comment (2; up to {INLINE_REPLIES} come inline, more cost "
        "requests of their own)",
    )
    parser.add_argument(
        "--rps",
        type=_rate,
        default=3.0,
        help="requests per second per token: the fake server's limit and VK_REQUESTS_PER_SECOND "
        "(3)",
    )
    parser.add_argument(
        "--latency",
        type=_latency,
        default=0.0,
        metavar="S",
        help="seconds the fake server waits before answering each execute, as VK takes to run "
        "one (0)",
    )
    add_isolation_arguments(parser)
    args = parser.parse_args(argv)
    return Options(
        posts=args.posts,
        comments_per_post=args.comments_per_post,
        replies=args.replies,
        rps=args.rps,
        latency=args.latency,
        redis_url=args.redis_url,
        flush=args.flush,
        shared_redis=args.shared_redis,
        database_url=args.database_url,
        use_database=args.use_database,
    )


# -- what the run should cost -----------------------------------------------------------------


def _batches(calls: int, size: int) -> int:
    return math.ceil(calls / size)


def expected_requests(options: Options, batch: int = 25) -> int:
    """The requests `parse_vk_comments` needs for the data when nothing fails.

    `groups.getById`, the first `wall.get` page, the other wall pages through `execute`; then
    per `batch` posts: their first comment pages, their other top-level pages, and the pages of
    every thread with more replies than VK inlines (read from offset 0), each through `execute`.
    """
    posts = options.posts
    requests = 2 + _batches(_batches(posts, MAX_COUNT) - 1, batch)
    pages_per_post = _batches(options.comments_per_post, MAX_COUNT)
    threads_per_post = options.comments_per_post if options.replies > INLINE_REPLIES else 0
    thread_pages = _batches(options.replies, MAX_COUNT) * threads_per_post
    for start in range(0, posts, batch):
        n = min(batch, posts - start)
        requests += 1  # first pages
        requests += _batches(n * max(0, pages_per_post - 1), batch)
        requests += _batches(n * thread_pages, batch)
    return requests


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Stopwatch:
    """Total seconds and each sample of one kind of work."""

    samples: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    @property
    def seconds(self) -> float:
        return sum(self.samples)

    @property
    def count(self) -> int:
        return len(self.samples)

    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000 if self.samples else 0.0

    def max_ms(self) -> float:
        return max(self.samples) * 1000 if self.samples else 0.0


@dataclass
class Profile:
    limiter: Stopwatch = field(default_factory=Stopwatch)
    http: Stopwatch = field(default_factory=Stopwatch)
    server: Stopwatch = field(default_factory=Stopwatch)
    storage: Stopwatch = field(default_factory=Stopwatch)
    # Names of the functions that could not be wrapped (renamed in src/): their rows say n/a.
    missing: set[str] = field(default_factory=set)


def _timed(function: Callable[..., Awaitable[Any]], watch: Stopwatch) -> Callable[..., Any]:
    @functools.wraps(function)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await function(*args, **kwargs)
        finally:
            watch.add(time.perf_counter() - started)

    return timed


@contextlib.contextmanager
def instrumented(profile: Profile) -> Iterator[None]:
    """Time the limiter waits, the HTTP round trips and the upserts, for this block only."""
    targets: list[tuple[Any, str, Stopwatch, str]] = [
        (VKClient, "_acquire", profile.limiter, "VKClient._acquire"),
        (VKClient, "_send", profile.http, "VKClient._send"),
        (comments_service, "upsert_comments", profile.storage, "service.upsert_comments"),
    ]
    restore: list[tuple[Any, str, Any]] = []
    try:
        for owner, name, watch, label in targets:
            original = getattr(owner, name, None)
            if not callable(original):
                profile.missing.add(label)
                continue
            restore.append((owner, name, original))
            setattr(owner, name, _timed(original, watch))
        yield
    finally:
        for owner, name, original in reversed(restore):
            setattr(owner, name, original)


class ServerClock:
    """ASGI wrapper of the fake server's app: how long it spends on each HTTP request."""

    def __init__(self, app: Any, watch: Stopwatch) -> None:
        self.app = app
        self.watch = watch

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.watch.add(time.perf_counter() - started)


@contextlib.contextmanager
def vk_environment(values: dict[str, str]) -> Iterator[None]:
    """Set the worker's `VK_*` variables for the block; put back what was there."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True)
class Result:
    options: Options
    vk: VKSettings
    comments: int
    top_level: int
    requests: int
    expected_requests: int
    execute_requests: int
    rate_errors: int
    other_errors: int
    max_per_second: int
    request_span: float
    wall_seconds: float
    pickup_seconds: float
    first_request_after: float
    last_request_before: float
    profile: Profile

    @property
    def comments_per_second(self) -> float:
        return self.comments / self.wall_seconds

    @property
    def top_level_per_second(self) -> float:
        return self.top_level / self.wall_seconds

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.wall_seconds

    @property
    def fetching_rate(self) -> float:
        """Requests/s from the first request's arrival to the last's."""
        return (self.requests - 1) / self.request_span if self.request_span > 0 else 0.0

    @property
    def limit(self) -> float:
        """Requests per second the limiter grants at most (it floors rates above 1/s)."""
        rps = self.options.rps
        return float(math.floor(rps)) if rps >= 1 else rps

    @property
    def ceiling(self) -> float:
        """Top-level comments/s if every request is an `execute` of full pages at the limit."""
        return self.vk.execute_batch * MAX_COUNT * self.limit

    @property
    def ceiling_with_replies(self) -> float:
        return self.ceiling * (1 + min(self.options.replies, INLINE_REPLIES))

    @property
    def over_limit(self) -> bool:
        return self.max_per_second > self.options.rps


@dataclass
class Run:
    """What the clean-up needs to know: the run's job ids, queue and community."""

    created: Created = field(default_factory=Created)
    community_id: int = field(default_factory=lambda: random.randrange(*COMMUNITY_IDS))
    token: str = field(default_factory=lambda: f"bench-vk-{uuid.uuid4().hex}")
    # time.monotonic() (the fake server's clock) when the job was queued and its ending seen.
    queued_at: float = 0.0
    ended_seen_at: float = 0.0


async def run(options: Options) -> Result:
    """Set up the isolated Redis database and database, ingest once, clean up."""
    bench = Run()
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(isolated_redis(options, bench.created))
        database_url = await stack.enter_async_context(isolated_database(options, bench.created))
        settings = _settings(options.redis_url, database_url)
        await stack.enter_async_context(_own_redis_keys(settings.redis_url, bench))
        await stack.enter_async_context(_own_rows(settings.database_url, options, bench))
        result = await ingest(options, settings, bench)
    return result


@asynccontextmanager
async def _own_redis_keys(redis_url: str, bench: Run) -> AsyncIterator[None]:
    """Delete the keys outside arq's and the queue's that the run made (its rate-limit log and
    the task's resume set, normally deleted by the task itself)."""
    try:
        yield
    finally:
        client: Redis = Redis.from_url(redis_url)
        try:
            names = [rate_key(bench.token)]
            names += [f"vkp:parse:done:{job_id}" for job_id in sorted(bench.created.job_ids)]
            await client.delete(*names)
        finally:
            await client.aclose()


@asynccontextmanager
async def _own_rows(database_url: str, options: Options, bench: Run) -> AsyncIterator[None]:
    """Check the community id is unused; delete its community, posts and comments after."""
    engine = create_engine(database_url)
    sessionmaker = create_sessionmaker(engine)
    owner_id = -bench.community_id
    try:
        async with sessionmaker() as session:
            taken = await session.scalar(
                select(func.count()).select_from(Community).filter_by(id=bench.community_id)
            )
            taken = taken or await session.scalar(
                select(func.count()).select_from(Comment).filter_by(owner_id=owner_id)
            )
        if taken:
            raise BenchError(f"community {bench.community_id} is in the database already")
        try:
            yield
        finally:
            if options.use_database is not None:
                async with sessionmaker.begin() as session:
                    await session.execute(delete(Comment).filter_by(owner_id=owner_id))
                    await session.execute(delete(Post).filter_by(owner_id=owner_id))
                    await session.execute(delete(Community).filter_by(id=bench.community_id))
    finally:
        await engine.dispose()


async def ingest(options: Options, settings: Settings, bench: Run) -> Result:
    community = community_with_posts(
        options.posts,
        options.comments_per_post,
        options.replies,
        community_id=bench.community_id,
    )
    expected_comments = sum(post.comment_count() for post in community.posts)
    profile = Profile()
    fake = FakeVK(token=bench.token, rate_limit=options.rps)
    fake.add(community)
    if options.latency:
        # Every execute (retries included) waits; faults are consumed only past the rate check.
        fake.fail("execute", *[Sleep(options.latency)] * (4 * expected_requests(options) + 100))
    fake.app = ServerClock(fake.app, profile.server)  # type: ignore[assignment]
    arq_settings = ArqSettings(
        queue_name=QUEUE,
        poll_delay=0.5,
        max_jobs=1,
        enqueue_rate_limit=0,
        burst_mode=False,
        wake_on_enqueue=True,
    )
    bench.created.queues.add(QUEUE)
    redis = create_redis(settings.redis_url, queue_name=QUEUE, timeout=settings.redis_timeout)
    engine = create_engine(settings.database_url, timeout=settings.database_timeout)
    sessionmaker = create_sessionmaker(engine)
    service = ArqService(
        redis=redis, sessionmaker=sessionmaker, registry=app_registry, settings=arq_settings
    )
    try:
        async with serve(fake):
            environment = {
                "VK_TOKEN": bench.token,
                "VK_API_URL": fake.url,
                "VK_REQUESTS_PER_SECOND": f"{options.rps:g}",
            }
            with vk_environment(environment), instrumented(profile):
                vk = VKSettings()  # what the worker's start-up hook will load
                expected = expected_requests(options, vk.execute_batch)
                note(f"bench: {describe_vk(vk)}")
                note(
                    f"bench: {expected_comments} comments to ingest, "
                    f"{expected} requests expected; running..."
                )
                options_ = worker_options(
                    registry=app_registry, settings=settings, arq_settings=arq_settings
                )
                async with running_worker(JobWorker, options_, target=1) as worker:
                    limit = (
                        3 * expected / options.rps
                        + JOB_SLACK_SECONDS
                        + expected_comments / JOB_COMMENTS_PER_SECOND
                    )
                    status = await _run_job(service, bench, worker, limit)
        stored = await _stored_comments(sessionmaker, bench.community_id)
    finally:
        await redis.aclose(close_connection_pool=True)
        await engine.dispose()

    if status.status is not JobStatus.COMPLETE:
        raise BenchError(f"the job ended {status.status.value}: {status.error}")
    result = status.result if isinstance(status.result, dict) else {}
    if stored != expected_comments or result.get("comments_parsed") != expected_comments:
        raise BenchError(
            f"expected {expected_comments} comments, the database holds {stored}, the job "
            f"reports {result.get('comments_parsed')} parsed"
        )
    if status.started_at is None or status.finished_at is None:
        raise BenchError("the job's history has no start or end time")
    wall = (status.finished_at - status.enqueued_at).total_seconds()
    requests = [r for r in fake.requests if r.token == bench.token]
    arrivals = sorted(r.at for r in requests)
    return Result(
        options=options,
        vk=vk,
        comments=stored,
        top_level=options.posts * options.comments_per_post,
        requests=len(requests),
        expected_requests=expected,
        execute_requests=sum(r.method == "execute" for r in requests),
        rate_errors=sum(r.error == RATE_ERROR for r in requests),
        other_errors=sum(r.error not in (None, RATE_ERROR) for r in requests),
        max_per_second=fake.max_per_second(bench.token),
        request_span=arrivals[-1] - arrivals[0] if arrivals else 0.0,
        wall_seconds=wall,
        pickup_seconds=(status.started_at - status.enqueued_at).total_seconds(),
        first_request_after=_first_request_after(arrivals, bench),
        last_request_before=_last_request_before(arrivals, bench),
        profile=profile,
    )


async def _run_job(
    service: ArqService, bench: Run, worker: WorkerRun, limit: float
) -> JobStatusResponse:
    """Queue the parse, wait (up to `limit` s) for its ending; note when it was queued and when
    its ending was seen (monotonic)."""
    bench.queued_at = time.monotonic()
    response = await service.enqueue_job(TASK, group_id=bench.community_id, limit=MAX_POSTS)
    bench.created.job_ids.add(response.job_id)
    deadline = bench.queued_at + limit
    while True:
        status = await service.get_job_status(response.job_id)
        if status.status.finished:
            bench.ended_seen_at = time.monotonic()
            return status
        if worker.task.done():
            raise BenchError(f"the worker stopped while the job was {status.status.value}")
        if time.monotonic() > deadline:
            raise BenchError(
                f"the job did not end within {limit:.0f} s ({status.status.value}, "
                f"{status.progress}%: {status.message})"
            )
        await asyncio.sleep(STATUS_POLL_SECONDS)


def _first_request_after(arrivals: list[float], bench: Run) -> float:
    """Seconds from queueing the job to the first request's arrival."""
    return arrivals[0] - bench.queued_at if arrivals else 0.0


def _last_request_before(arrivals: list[float], bench: Run) -> float:
    """Seconds from the last request's arrival to the job's ending being seen (within a poll)."""
    return bench.ended_seen_at - arrivals[-1] if arrivals else 0.0


async def _stored_comments(sessionmaker: Any, community_id: int) -> int:
    async with sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).select_from(Comment).filter_by(owner_id=-community_id)
        )
    return int(count or 0)


# -- output -----------------------------------------------------------------------------------


def format_table(result: Result) -> str:
    batch, rps = result.vk.execute_batch, result.limit
    errors = f"{result.rate_errors} answered error {RATE_ERROR}"
    if result.other_errors:
        errors += f", {result.other_errors} other errors"
    rows = [
        ("comments stored", f"{result.comments}"),
        ("  top-level", f"{result.top_level}"),
        (
            "HTTP requests (server record)",
            f"{result.requests} ({result.execute_requests} execute; {errors}; "
            f"{result.expected_requests} expected)",
        ),
        ("wall time", f"{result.wall_seconds:.2f} s"),
        ("comments/s", f"{result.comments_per_second:.0f}"),
        ("  top-level comments/s", f"{result.top_level_per_second:.0f}"),
        ("requests/s at the server", f"{result.requests_per_second:.2f} (over the wall time)"),
        ("  while fetching", f"{result.fetching_rate:.2f} (first to last request)"),
        (
            "max requests in a rolling second",
            f"{result.max_per_second} (limit {result.options.rps:g})",
        ),
        (
            f"ceiling: {batch} x {MAX_COUNT} x {rps:g}",
            f"{result.ceiling:.0f} top-level comments/s",
        ),
        (
            f"  with {min(result.options.replies, INLINE_REPLIES)} inline replies each",
            f"{result.ceiling_with_replies:.0f} comments/s",
        ),
        (
            "  reached",
            f"{100 * result.top_level_per_second / result.ceiling:.0f} % (top-level)",
        ),
    ]
    return text_table(("metric", "value"), rows, right=())


def format_profile(result: Result) -> str:
    profile, wall = result.profile, result.wall_seconds

    def seconds(watch: Stopwatch, name: str) -> tuple[str, str, str, str]:
        if name in profile.missing:
            return ("n/a", "n/a", "n/a", "n/a")
        return (
            f"{watch.seconds:.2f}",
            f"{100 * watch.seconds / wall:.0f} %",
            f"{watch.count}",
            f"{watch.median_ms():.0f} / {watch.max_ms():.0f}",
        )

    measured = sum(
        watch.seconds
        for watch, name in (
            (profile.limiter, "VKClient._acquire"),
            (profile.http, "VKClient._send"),
            (profile.storage, "service.upsert_comments"),
        )
        if name not in profile.missing
    )
    rest = wall - measured
    rows = [
        ("waiting for the rate limiter", *seconds(profile.limiter, "VKClient._acquire")),
        ("HTTP round trips (answer parsed)", *seconds(profile.http, "VKClient._send")),
        ("  of which the fake server's handling", *seconds(profile.server, "")),
        ("storage (upsert_comments)", *seconds(profile.storage, "service.upsert_comments")),
        (
            "the rest (pick-up, commits, progress, ...)",
            # Negative only if the work above overlapped (the task does it in sequence).
            f"{rest:.2f}" if rest >= 0 else "overlap",
            f"{100 * rest / wall:.0f} %" if rest >= 0 else "",
            "",
            "",
        ),
        (
            "  job pick-up (started - enqueued)",
            f"{result.pickup_seconds:.2f}",
            f"{100 * result.pickup_seconds / wall:.0f} %",
            "",
            "",
        ),
        (
            "  queued to first request",
            f"{result.first_request_after:.2f}",
            f"{100 * result.first_request_after / wall:.0f} %",
            "",
            "",
        ),
        (
            "  last request to ending seen",
            f"{result.last_request_before:.2f}",
            f"{100 * result.last_request_before / wall:.0f} %",
            "",
            "",
        ),
        ("wall time", f"{wall:.2f}", "100 %", "", ""),
    ]
    headers = ("where the time went", "s", "share", "calls", "median / max ms")
    return text_table(headers, rows, right=range(1, len(headers)))


def describe_vk(vk: VKSettings) -> str:
    return (
        f"VK client: {vk.requests_per_second:g} requests/s, rate window slack "
        f"{vk.rate_window_slack:g} s, {vk.execute_batch} calls per execute, timeout "
        f"{vk.timeout:g} s, {vk.max_retries} retries"
    )


def describe(options: Options) -> str:
    return (
        f"{options.posts} posts x {options.comments_per_post} comments x "
        f"{options.replies} replies each; fake VK limit {options.rps:g} requests/s per token"
        f"{f', {options.latency:g} s per execute' if options.latency else ''}; "
        f"{describe_isolation(options)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    result = run_main(describe(options), run(options), RedisError)
    if isinstance(result, Failed):
        return result.exit_code
    print(describe(options))
    print(describe_vk(result.vk))
    print()
    print(format_table(result))
    print()
    print(format_profile(result))
    if result.over_limit:
        print(
            f"bench: the server saw {result.max_per_second} requests in one rolling second, "
            f"over the limit of {options.rps:g}",
            file=sys.stderr,
        )
        return 3
    return 0


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
