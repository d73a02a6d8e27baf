"""One community's statistics recomputed (`update_community_statistics`, the pipeline's step):
its row only; every other community's row stays as it was, even a removed community's."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.comments import service
from src.comments.models import Community
from src.maintenance.statistics import update_statistics
from tests.maintenance.test_statistics import (
    EXPECTED,
    at,
    comment,
    emptied,
    on_sqlite,
    populate,
    stats,
    without_time,
)


async def check(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with sessionmaker.begin() as session:
        await populate(session)
    # Only community 7's row exists at first: the others are not computed yet.
    async with sessionmaker.begin() as session:
        report = await update_statistics(session, community_id=7)
    assert (report["communities"], report["community_id"]) == (1, 7)
    assert without_time(await stats(sessionmaker)) == [EXPECTED[1]]

    async with sessionmaker.begin() as session:
        await update_statistics(session)
    before = await stats(sessionmaker)
    assert without_time(before) == EXPECTED

    # New comments on 5 and 7, community 9 removed: recomputing 7 changes 7's row only.
    async with sessionmaker.begin() as session:
        await service.upsert_comments(
            session, owner_id=-7, post_id=1, comments=[comment(3, 21, 300)]
        )
        await service.upsert_comments(
            session, owner_id=-5, post_id=1, comments=[comment(7, 13, 50)]
        )
        await session.execute(delete(Community).where(Community.id == 9))
    async with sessionmaker.begin() as session:
        report = await update_statistics(session, community_id=7)
    assert report["communities"] == 1
    after = await stats(sessionmaker)
    assert [row.community_id for row in after] == [5, 7, 9]
    assert after[0] == before[0]  # 5: as computed before, time included
    assert after[2] == before[2]  # 9: removed, but its row is not this run's to drop
    park = after[1]
    assert (park.comments, park.authors, park.last_comment_at) == (3, 2, at(300))
    assert park.computed_at > before[1].computed_at

    # Recomputing a removed community drops its row, and only its row.
    async with sessionmaker.begin() as session:
        report = await update_statistics(session, community_id=9)
    assert report["communities"] == 0
    assert [row.community_id for row in await stats(sessionmaker)] == [5, 7]
    # A community never stored: nothing written, nothing dropped.
    async with sessionmaker.begin() as session:
        assert (await update_statistics(session, community_id=404))["communities"] == 0
    final = await stats(sessionmaker)
    assert final[0] == before[0] and final[1] == park


async def test_one_communitys_statistics_on_postgresql(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await check(await emptied(sessionmaker))


async def test_one_communitys_statistics_on_sqlite(tmp_path: Path) -> None:
    async with on_sqlite(tmp_path) as sessionmaker:
        await check(sessionmaker)
