"""The job history `bench.stats` measures: `--rows` jobs enqueued at random over `--days` days
up to END, of 8 tasks and `--owners` owners, mostly complete (some failed, aborted, retried,
deferred, still queued or running), with waits and run times drawn per task."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from sqlalchemy import make_url

END = datetime(2026, 1, 1, tzinfo=UTC)
COPY_CHUNK = 20_000
# Tasks, how often each is queued, and their median run time in seconds.
TASKS = (
    ("parse_vk_comments", 20, 30.0),
    ("extract_keywords", 15, 8.0),
    ("analyze_sentiment", 15, 5.0),
    ("process_batch_comments", 10, 60.0),
    ("generate_report", 10, 3.0),
    ("send_notification", 20, 0.3),
    ("update_statistics", 5, 2.0),
    ("ping", 5, 0.01),
)
# Status of a job, and how often (per 1000): most complete; the not-finished ones are recent.
STATUSES = (
    ("complete", 930),
    ("failed", 40),
    ("aborted", 10),
    ("in_progress", 8),
    ("queued", 6),
    ("deferred", 4),
    ("retrying", 2),
)
COLUMNS = (
    "job_id",
    "function",
    "queue_name",
    "args",
    "owner",
    "priority",
    "status",
    "progress",
    "tries",
    "enqueued_at",
    "scheduled_for",
    "started_at",
    "finished_at",
    "result",
)


def owner_name(index: int) -> str:
    return f"user-{index:03d}"


def _job_rows(
    start: int, count: int, *, days: int, owners: int, rng: random.Random
) -> list[tuple[Any, ...]]:
    names = [name for name, _, _ in TASKS]
    task_weights = [weight for _, weight, _ in TASKS]
    medians = {name: median for name, _, median in TASKS}
    statuses = [status for status, _ in STATUSES]
    status_weights = [weight for _, weight in STATUSES]
    span = days * 86400
    args = orjson.dumps({"group_id": 1, "limit": 100}).decode()
    rows = []
    for number in range(start, start + count):
        function = rng.choices(names, task_weights)[0]
        status = rng.choices(statuses, status_weights)[0]
        enqueued = END - timedelta(seconds=rng.uniform(1, span))
        deferred = rng.random() < 0.1 or status == "deferred"
        scheduled = enqueued + timedelta(seconds=rng.uniform(1, 3600) if deferred else 0)
        tries = 1 if rng.random() < 0.94 else rng.randint(2, 3)
        if status == "failed":
            tries = 3
        started = finished = None
        result = None
        if status in ("queued", "deferred"):
            tries = 0
        else:
            started = scheduled + timedelta(seconds=rng.expovariate(2.0))
            if status == "retrying":
                scheduled = started + timedelta(seconds=rng.uniform(1, 30))
            elif status != "in_progress":
                run = rng.lognormvariate(0, 0.8) * medians[function]
                finished = started + timedelta(seconds=run)
                result = '{"ok": true}' if status == "complete" else None
        rows.append(
            (
                f"bench-{number}",
                function,
                "arq:queue",
                args,
                owner_name(rng.randrange(owners)),
                "normal",
                status,
                100 if status == "complete" else 0,
                tries,
                enqueued,
                scheduled,
                started,
                finished,
                result,
            )
        )
    return rows


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def seed(url: str, *, rows: int, days: int, owners: int, seed: int) -> None:
    """`rows` jobs over `days` days up to END, of `owners` owners, by COPY, then VACUUM
    ANALYZE (the triggers of migration 0011 mark their hours dirty)."""
    rng = random.Random(seed)
    conn = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        for start in range(0, rows, COPY_CHUNK):
            count = min(COPY_CHUNK, rows - start)
            records = _job_rows(start, count, days=days, owners=owners, rng=rng)
            await conn.copy_records_to_table("arq_jobs", records=records, columns=COLUMNS)
    finally:
        await conn.close()
    await vacuum(url, "arq_jobs")


async def vacuum(url: str, tables: str) -> None:
    """VACUUM (ANALYZE) `tables` (as autovacuum would; the test servers run without it)."""
    conn = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        await conn.execute(f"VACUUM (ANALYZE) {tables}", timeout=3600)
    finally:
        await conn.close()
