"""Per-community statistics recomputed from stored communities, posts, comments and jobs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq.models import JobRecord
from src.comments import service
from src.comments.models import CommentAnalysis, Community
from src.database import create_engine, create_sessionmaker
from src.maintenance.statistics import CommunityStatsOut, list_statistics, update_statistics
from tests.conftest import migrate

BASE = 1_700_000_000
PARSED_AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def at(offset: int) -> datetime:
    return datetime.fromtimestamp(BASE + offset, tz=UTC)


def comment(comment_id: int, from_id: int | None, offset: int, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"id": comment_id, "date": BASE + offset, "text": f"c{comment_id}"}
    if from_id is not None:
        raw["from_id"] = from_id
    return {**raw, **extra}


def job(job_id: str, function: str, args: dict[str, Any], status: str) -> JobRecord:
    now = datetime.now(UTC)
    return JobRecord(
        job_id=job_id,
        function=function,
        queue_name="arq:queue",
        args=args,
        owner="alice",
        status=status,
        enqueued_at=now,
        scheduled_for=now,
    )


async def populate(session: AsyncSession) -> None:
    """Community 5 (6 comments, 2 deleted, 3 authors), 7 (2 comments, 1 author), 9 (nothing)."""
    for group_id, screen_name in ((5, "water"), (7, "park"), (9, "empty")):
        group = {"id": group_id, "screen_name": screen_name, "name": screen_name.title()}
        await service.upsert_community(session, group=group)
    await service.mark_community_parsed(session, community_id=5, at=PARSED_AT)
    posts = [{"id": post_id, "date": BASE, "text": "post"} for post_id in (1, 2)]
    await service.upsert_posts(session, owner_id=-5, posts=posts)
    await service.upsert_posts(session, owner_id=-7, posts=posts[:1])
    await service.upsert_comments(
        session,
        owner_id=-5,
        post_id=1,
        comments=[
            comment(1, 10, 0),
            comment(2, 10, 10),
            comment(3, 11, 20, deleted=True),
            comment(4, None, 30, deleted=True),
        ],
    )
    reply = comment(6, 10, 40)
    await service.upsert_comments(
        session,
        owner_id=-5,
        post_id=2,
        comments=[comment(5, 12, 5, thread={"count": 1, "items": [reply]})],
    )
    await service.upsert_comments(
        session, owner_id=-7, post_id=1, comments=[comment(1, 20, 100), comment(2, 20, 200)]
    )
    # A user's wall (positive owner) belongs to no community.
    await service.upsert_comments(session, owner_id=100, post_id=1, comments=[comment(1, 30, 0)])
    for comment_id in (1, 999):  # 999: an analysis whose comment is gone is not counted
        session.add(
            CommentAnalysis(
                owner_id=-5,
                comment_id=comment_id,
                text_hash="0" * 64,
                word_count=1,
                has_cyrillic=False,
                lemma_counts={},
                pos_counts={},
                details={},
            )
        )
    session.add_all(
        [
            job("j1", "parse_vk_comments", {"group_id": 5, "limit": 10}, "complete"),
            job("j2", "parse_vk_comments", {"group_id": 5}, "complete"),
            job("j3", "parse_vk_comments", {"group_id": 5}, "failed"),
            job("j4", "parse_vk_comments", {"group_id": 7}, "queued"),
            job("j5", "parse_vk_comments", {"screen_name": "water"}, "complete"),
            job("j6", "parse_vk_comments", {"group_id": 55}, "complete"),
            job("j7", "extract_keywords", {"group_id": 5}, "complete"),
        ]
    )
    await session.flush()


EXPECTED = [
    {
        "community_id": 5,
        "screen_name": "water",
        "name": "Water",
        "posts": 2,
        "comments": 6,
        "deleted_comments": 2,
        "authors": 3,
        "analysed_comments": 1,
        "first_comment_at": at(0),
        "last_comment_at": at(40),
        "last_parsed_at": PARSED_AT,
        "jobs_by_status": {"complete": 2, "failed": 1},
    },
    {
        "community_id": 7,
        "screen_name": "park",
        "name": "Park",
        "posts": 1,
        "comments": 2,
        "deleted_comments": 0,
        "authors": 1,
        "analysed_comments": 0,
        "first_comment_at": at(100),
        "last_comment_at": at(200),
        "last_parsed_at": None,
        "jobs_by_status": {"queued": 1},
    },
    {
        "community_id": 9,
        "screen_name": "empty",
        "name": "Empty",
        "posts": 0,
        "comments": 0,
        "deleted_comments": 0,
        "authors": 0,
        "analysed_comments": 0,
        "first_comment_at": None,
        "last_comment_at": None,
        "last_parsed_at": None,
        "jobs_by_status": {},
    },
]


async def stats(sessionmaker: async_sessionmaker[AsyncSession]) -> list[CommunityStatsOut]:
    async with sessionmaker() as session:
        return [CommunityStatsOut.model_validate(row) for row in await list_statistics(session)]


def without_time(rows: list[CommunityStatsOut]) -> list[dict[str, Any]]:
    return [row.model_dump(exclude={"computed_at"}) for row in rows]


async def check(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with sessionmaker.begin() as session:
        await populate(session)
    before = datetime.now(UTC)
    async with sessionmaker.begin() as session:
        report = await update_statistics(session)
    assert report["communities"] == 3
    computed_at = datetime.fromisoformat(report["computed_at"])
    assert before <= computed_at <= datetime.now(UTC)
    first = await stats(sessionmaker)
    assert without_time(first) == EXPECTED
    assert {row.computed_at for row in first} == {computed_at}

    # Again: the same rows, only computed later.
    async with sessionmaker.begin() as session:
        again = await update_statistics(session)
    second = await stats(sessionmaker)
    assert without_time(second) == EXPECTED
    assert {row.computed_at for row in second} == {datetime.fromisoformat(again["computed_at"])}
    assert second[0].computed_at >= computed_at

    # A removed community's row goes; a new comment shows up in its community's row.
    async with sessionmaker.begin() as session:
        await session.execute(delete(Community).where(Community.id == 9))
        await service.upsert_comments(
            session, owner_id=-7, post_id=1, comments=[comment(3, 21, 300, deleted=True)]
        )
        assert (await update_statistics(session))["communities"] == 2
    third = await stats(sessionmaker)
    assert [row.community_id for row in third] == [5, 7]
    park = third[1]
    assert (park.comments, park.deleted_comments, park.authors) == (3, 1, 2)
    assert park.last_comment_at == at(300)
    assert without_time(third)[0] == EXPECTED[0]


async def emptied(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> async_sessionmaker[AsyncSession]:
    """`sessionmaker` (the run's PostgreSQL database) with the tables the statistics read
    emptied."""
    async with sessionmaker.begin() as session:
        await session.execute(
            text(
                "TRUNCATE comments, posts, communities, comment_analyses, community_stats, "
                "arq_jobs, arq_job_dependencies"
            )
        )
    return sessionmaker


@contextlib.asynccontextmanager
async def on_sqlite(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A sessionmaker of a new, migrated SQLite database."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'stats.db'}"
    await asyncio.to_thread(migrate, url)  # alembic runs its own event loop
    engine = create_engine(url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


async def test_statistics_on_postgresql(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    await check(await emptied(sessionmaker))


async def test_statistics_on_sqlite(tmp_path: Path) -> None:
    async with on_sqlite(tmp_path) as sessionmaker:
        await check(sessionmaker)
