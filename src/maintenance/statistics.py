"""Per-community statistics: recomputed from the stored data into `community_stats`.

`update_statistics` takes the session and flushes at most; the caller commits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import ColumnElement, Table, and_, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from src.arq import history_shared
from src.comments import queries
from src.comments.queries import WallTotals
from src.maintenance.models import CommunityStats

PARSE_FUNCTION = "parse_vk_comments"
CHUNK_SIZE = 1000  # rows per INSERT: 13 columns each, under both backends' parameter limits

_stats: Table = CommunityStats.__table__  # type: ignore[assignment]
_UPDATED = [c.name for c in _stats.columns if c.name != "community_id"]
_NO_COMMENTS = WallTotals()


class CommunityStatsOut(BaseModel):
    """One community's statistics as the API shows them."""

    model_config = ConfigDict(from_attributes=True)

    community_id: int
    screen_name: str
    name: str
    posts: int
    comments: int
    deleted_comments: int
    authors: int
    analysed_comments: int
    first_comment_at: datetime | None
    last_comment_at: datetime | None
    last_parsed_at: datetime | None
    jobs_by_status: dict[str, int]
    computed_at: datetime


def _chunks(rows: Sequence[dict[str, Any]]) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(rows), CHUNK_SIZE):
        yield rows[start : start + CHUNK_SIZE]


async def update_statistics(
    session: AsyncSession, *, community_id: int | None = None
) -> dict[str, Any]:
    """Recompute the row of every stored community and drop the rows of removed ones; with
    `community_id`, that community's row only (dropped if it is no longer stored), every
    other row left as it is.

    Communities without posts or comments get zeros. Returns the number of rows written.
    """
    now = datetime.now(UTC)
    communities = await queries.communities(session, community_id=community_id)
    comments = await queries.comment_totals_by_wall(session, community_id=community_id)
    posts = await queries.post_counts_by_wall(session, community_id=community_id)
    analysed = await queries.analysed_counts_by_wall(session, community_id=community_id)
    # The parse jobs naming each community by its `group_id`.
    jobs = await history_shared.counts_by_group_id(session, function=PARSE_FUNCTION)

    rows: list[dict[str, Any]] = []
    for community in communities:
        owner_id = -community.id  # a community's wall is its negated id
        totals = comments.get(owner_id, _NO_COMMENTS)
        rows.append(
            {
                "community_id": community.id,
                "screen_name": community.screen_name,
                "name": community.name,
                "posts": posts.get(owner_id, 0),
                "comments": totals.comments,
                "deleted_comments": totals.deleted,
                "authors": totals.authors,
                "analysed_comments": analysed.get(owner_id, 0),
                "first_comment_at": totals.first_at,
                "last_comment_at": totals.last_at,
                "last_parsed_at": community.last_parsed_at,
                "jobs_by_status": jobs.get(community.id, {}),
                "computed_at": now,
            }
        )

    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for chunk in _chunks(rows):
        statement = insert(_stats).values(list(chunk))
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[_stats.c.community_id],
                set_={name: statement.excluded[name] for name in _UPDATED},
            )
        )
    removed: ColumnElement[bool] = _stats.c.community_id.not_in(queries.community_ids())
    if community_id is not None:
        removed = and_(_stats.c.community_id == community_id, removed)
    await session.execute(delete(_stats).where(removed))
    await session.flush()
    result: dict[str, Any] = {"communities": len(rows), "computed_at": now.isoformat()}
    if community_id is not None:
        result["community_id"] = community_id
    return result


async def list_statistics(session: AsyncSession) -> list[CommunityStats]:
    """Every community's stored statistics, by community id."""
    result = await session.scalars(select(CommunityStats).order_by(CommunityStats.community_id))
    return list(result)
