"""Per-community statistics: recomputed from the stored data into `community_stats`.

`update_statistics` takes the session and flushes at most; the caller commits.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Integer, Table, and_, case, delete, distinct, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from src.admin.models import CommunityStats
from src.arq.models import JobRecord
from src.comments.models import Comment, CommentAnalysis, Community, Post

PARSE_FUNCTION = "parse_vk_comments"
CHUNK_SIZE = 1000  # rows per INSERT: 13 columns each, under both backends' parameter limits

_stats: Table = CommunityStats.__table__  # type: ignore[assignment]
_UPDATED = [c.name for c in _stats.columns if c.name != "community_id"]


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


def _group_id(args: Any) -> int | None:
    """The `group_id` a parse job was given, if it names a community by id."""
    if not isinstance(args, Mapping):
        return None
    value = args.get("group_id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


async def _jobs_by_status(session: AsyncSession) -> dict[int, dict[str, int]]:
    """{community id: {status: count}} of the parse jobs, matched on `args.group_id` in Python
    (JSON path operators differ between PostgreSQL's JSONB and SQLite)."""
    counts: defaultdict[int, Counter[str]] = defaultdict(Counter)
    rows = await session.stream(
        select(JobRecord.args, JobRecord.status).where(JobRecord.function == PARSE_FUNCTION)
    )
    async for args, status in rows:
        group_id = _group_id(args)
        if group_id is not None and group_id > 0:
            counts[group_id][status] += 1
    return {gid: dict(sorted(statuses.items())) for gid, statuses in counts.items()}


def _chunks(rows: Sequence[dict[str, Any]]) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(rows), CHUNK_SIZE):
        yield rows[start : start + CHUNK_SIZE]


async def update_statistics(session: AsyncSession) -> dict[str, Any]:
    """Recompute the row of every stored community and drop the rows of removed ones.

    Communities without posts or comments get zeros. Returns the number of rows written.
    """
    now = datetime.now(UTC)
    communities = (
        await session.execute(
            select(Community.id, Community.screen_name, Community.name, Community.last_parsed_at)
        )
    ).all()

    comment_rows = await session.execute(
        select(
            Comment.owner_id,
            func.count(),
            func.sum(case((Comment.is_deleted, 1), else_=0), type_=Integer),
            func.count(distinct(Comment.from_id)),
            func.min(Comment.date),
            func.max(Comment.date),
        ).group_by(Comment.owner_id)
    )
    comments = {row[0]: row[1:] for row in comment_rows}
    post_rows = await session.execute(select(Post.owner_id, func.count()).group_by(Post.owner_id))
    posts: dict[int, int] = {owner: count for owner, count in post_rows}
    analysed_rows = await session.execute(
        select(CommentAnalysis.owner_id, func.count())
        .join(
            Comment,
            and_(
                Comment.owner_id == CommentAnalysis.owner_id,
                Comment.comment_id == CommentAnalysis.comment_id,
            ),
        )
        .group_by(CommentAnalysis.owner_id)
    )
    analysed: dict[int, int] = {owner: count for owner, count in analysed_rows}
    jobs = await _jobs_by_status(session)

    rows: list[dict[str, Any]] = []
    for community_id, screen_name, name, last_parsed_at in communities:
        owner_id = -community_id  # a community's wall is its negated id
        total, deleted, authors, first, last = comments.get(owner_id, (0, 0, 0, None, None))
        rows.append(
            {
                "community_id": community_id,
                "screen_name": screen_name,
                "name": name,
                "posts": posts.get(owner_id, 0),
                "comments": total,
                "deleted_comments": deleted or 0,
                "authors": authors,
                "analysed_comments": analysed.get(owner_id, 0),
                "first_comment_at": first,
                "last_comment_at": last,
                "last_parsed_at": last_parsed_at,
                "jobs_by_status": jobs.get(community_id, {}),
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
    await session.execute(delete(_stats).where(_stats.c.community_id.not_in(select(Community.id))))
    await session.flush()
    return {"communities": len(rows), "computed_at": now.isoformat()}


async def list_statistics(session: AsyncSession) -> list[CommunityStats]:
    """Every community's stored statistics, by community id."""
    result = await session.scalars(select(CommunityStats).order_by(CommunityStats.community_id))
    return list(result)
