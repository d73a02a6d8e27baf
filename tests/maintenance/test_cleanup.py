"""`cleanup_old_data` through the endpoint and a real worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq.models import JobRecord
from src.comments import service
from src.comments.models import Comment, CommentAnalysis
from src.reports.models import Report
from tests.arq.helpers import wait_for
from tests.conftest import headers

CLEANUP = "/api/v1/comments/cleanup/async"
NOW = datetime.now(UTC)


@pytest.fixture(autouse=True)
async def data(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """4 comments 400 days old (one analysed), 2 recent; jobs: old finished, old running;
    reports: one 400 days old, one recent."""
    async with sessionmaker.begin() as session:
        await session.execute(
            text("TRUNCATE comments, posts, communities, comment_analyses, reports")
        )
        for report_id, created in (("old-report", NOW - timedelta(days=400)), ("new-report", NOW)):
            session.add(
                Report(
                    id=report_id,
                    owner="alice",
                    group_id=3,
                    format="json",
                    params={},
                    content_type="application/json",
                    filename="report.json",
                    size_bytes=2,
                    content=b"{}",
                    summary={},
                    created_at=created,
                )
            )
        comments = [
            {
                "id": i,
                "from_id": 1,
                "text": f"comment {i}",
                "likes": {"count": 0},
                "date": int((NOW - timedelta(days=400 if i < 4 else 1)).timestamp()),
            }
            for i in range(6)
        ]
        await service.upsert_comments(session, owner_id=-3, post_id=1, comments=comments)
        session.add(
            CommentAnalysis(
                owner_id=-3,
                comment_id=0,
                text_hash="x",
                word_count=2,
                has_cyrillic=False,
                lemma_counts={},
                pos_counts={},
                details={},
                analyzed_at=NOW,
            )
        )
        old = NOW - timedelta(days=400)
        for job_id, status, finished in (
            ("old-done", "complete", old),
            ("old-open", "queued", None),
        ):
            session.add(
                JobRecord(
                    job_id=job_id,
                    function="ping",
                    queue_name="arq:queue",
                    args={},
                    owner="alice",
                    priority="normal",
                    status=status,
                    progress=0,
                    tries=1,
                    enqueued_at=old,
                    scheduled_for=old,
                    finished_at=finished,
                )
            )


async def counts(sessionmaker: async_sessionmaker[AsyncSession]) -> list[int]:
    async with sessionmaker() as session:
        return [
            int(await session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (Comment, CommentAnalysis, JobRecord, Report)
        ]


async def run(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.post(CLEANUP, params=params, headers=headers("root"))
    assert response.status_code == 202, response.text
    return await wait_for(client, response.json()["data"]["job_id"], owner="root")


async def test_dry_run_counts_and_the_real_run_removes(
    client: httpx.AsyncClient, worker: Any, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    dry = await run(client, older_than_days=180)
    assert dry["status"] == "complete", dry
    assert dry["result"]["dry_run"] is True
    counted = [dry["result"][key] for key in ("comments", "analyses", "jobs", "reports")]
    assert counted == [4, 1, 1, 1]
    assert await counts(sessionmaker) == [6, 1, 3, 2]  # the dry run's own job is on record too

    real = await run(client, older_than_days=180, dry_run=False)
    assert real["result"]["dry_run"] is False
    assert (real["result"]["comments"], real["result"]["jobs"], real["result"]["reports"]) == (
        4,
        1,
        1,
    )
    comments, analyses, _, _ = await counts(sessionmaker)
    assert (comments, analyses) == (2, 0)
    async with sessionmaker() as session:
        left = set(await session.scalars(select(JobRecord.job_id)))
        reports = set(await session.scalars(select(Report.id)))
    assert "old-done" not in left and "old-open" in left  # unfinished jobs are kept
    assert reports == {"new-report"}


async def test_cleanup_needs_the_admin_role(client: httpx.AsyncClient) -> None:
    response = await client.post(CLEANUP, params={"older_than_days": 30}, headers=headers("alice"))
    assert response.status_code == 403
    bad = await client.post(CLEANUP, params={"older_than_days": 0}, headers=headers("root"))
    assert bad.status_code == 422


@pytest.mark.parametrize(("retention", "expected"), [(300, [4, 1, 1, 1]), (500, [0, 0, 0, 0])])
async def test_without_older_than_days_the_configured_retention_counts(
    client: httpx.AsyncClient,
    worker: Any,
    sessionmaker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
    retention: int,
    expected: list[int],
) -> None:
    # The workers' setting, read when the job runs (as the nightly schedule reads it).
    monkeypatch.setenv("ARQ_CLEANUP_RETENTION_DAYS", str(retention))
    response = await client.post(CLEANUP, headers=headers("root"))
    assert response.status_code == 202, response.text
    assert response.json()["data"]["params"] == {"dry_run": True}  # a dry run by default
    done = await wait_for(client, response.json()["data"]["job_id"], owner="root")
    assert done["status"] == "complete", done
    result = done["result"]
    assert result["older_than_days"] == retention
    assert result["dry_run"] is True
    assert [result[key] for key in ("comments", "analyses", "jobs", "reports")] == expected
    assert await counts(sessionmaker) == [6, 1, 3, 2]  # nothing removed


async def test_an_explicit_age_wins_over_the_retention(
    client: httpx.AsyncClient, worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARQ_CLEANUP_RETENTION_DAYS", "500")
    done = await run(client, older_than_days=180)
    assert (done["result"]["older_than_days"], done["result"]["comments"]) == (180, 4)
