"""Statistics through the job API and the endpoint; schedules run once per tick across workers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis as sync_redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq.config import ArqSettings
from src.arq.registry import TaskRegistry
from src.arq.worker import JobWorker, worker_options
from src.comments import service
from src.config import Settings
from src.maintenance.config import MaintenanceSettings
from tests.arq.helpers import enqueue, wait_for
from tests.conftest import WorkerHandle, headers


@pytest.fixture(autouse=True)
async def community(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with sessionmaker.begin() as session:
        await session.execute(
            text("TRUNCATE comments, posts, communities, comment_analyses, community_stats")
        )
        await service.upsert_community(
            session, group={"id": 4, "name": "Four", "screen_name": "four", "is_closed": 0}
        )
        comments = [
            {
                "id": i,
                "from_id": 10 + i % 2,
                "date": 1_700_000_000 + i,
                "text": "x",
                "likes": {"count": 0},
            }
            for i in range(3)
        ]
        await service.upsert_comments(session, owner_id=-4, post_id=1, comments=comments)


async def test_statistics_job_and_endpoint(client: httpx.AsyncClient, worker: Any) -> None:
    user = await enqueue(client, "update_statistics", owner="alice")
    assert user.status_code == 403
    job_id = (await enqueue(client, "update_statistics", owner="root")).json()["job_id"]
    done = await wait_for(client, job_id, owner="root")
    assert done["status"] == "complete", done
    assert done["result"]["communities"] == 1
    stats = await client.get("/api/v1/comments/stats", headers=headers("bob"))
    assert stats.status_code == 200
    (row,) = stats.json()
    assert (row["community_id"], row["comments"], row["authors"]) == (4, 3, 2)


async def test_schedule_runs_once_per_tick_however_many_workers(
    client: httpx.AsyncClient,
    settings: Settings,
    registry: TaskRegistry,
    redis_db: sync_redis.Redis,
) -> None:
    arq_settings = ArqSettings(_env_file=None, poll_delay=0.05)
    handles = [
        WorkerHandle(
            worker_options(registry=registry, settings=settings, arq_settings=arq_settings)
        )
        for _ in range(2)
    ]
    workers: list[JobWorker] = [await handle.start() for handle in handles]
    try:
        while not all("worker_id" in worker.ctx for worker in workers):
            await asyncio.sleep(0.01)  # both have started
        tick = datetime.now(UTC).replace(microsecond=0)
        for worker in workers:
            (job,) = [c for c in worker.cron_jobs if c.name == "cron:update_statistics"]
            job.next_run = tick
            await worker.run_cron(tick, 0.5)
        keys = [k for k in redis_db.scan_iter("arq:*cron:update_statistics*")]
        assert len({k.decode().rsplit(":", 1)[-1] for k in keys}) == 1  # one job for the tick
        for _ in range(200):
            stats = (await client.get("/api/v1/comments/stats", headers=headers("bob"))).json()
            if stats:
                break
            await asyncio.sleep(0.05)
        assert stats[0]["comments"] == 3
        # The statistics are written before the job returns: wait for its recorded ending.
        for _ in range(200):
            runs = (
                await client.get(
                    "/api/v1/arq/jobs",
                    params={"function": "update_statistics"},
                    headers=headers("root"),
                )
            ).json()["items"]
            if runs and all(run["status"] == "complete" for run in runs):
                break
            await asyncio.sleep(0.05)
        assert len(runs) == 1
        assert sum(w.jobs_complete for w in workers) == 1
    finally:
        for handle in handles:
            await handle.stop()
    # The destructive schedule is off unless switched on.
    assert not MaintenanceSettings(_env_file=None).cron_cleanup
