"""What other packages read of the comment tables, and the removal of old comments.

Reports count one community's (or every community's) comments over a period, the statistics
count every wall (or one community's), and the cleanup removes old comments with their
analyses: the SQL for each lives here, so the comment tables are read and written only by this
package. Functions take the session first and return plain data (the caller owns the
transaction).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    case,
    cast,
    delete,
    distinct,
    func,
    literal_column,
    select,
    true,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from src.comments.models import Comment, CommentAnalysis, Community, Post

# -- one community over a period (reports) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommunityPeriod:
    """The comments on a community's wall (`owner_id = -group_id`), or with `group_id` None on
    every community's wall (`owner_id < 0`), thread replies included, dated in [since, until);
    either end may be open."""

    group_id: int | None
    since: datetime | None = None
    until: datetime | None = None

    def walls(self, owner_id: InstrumentedAttribute[int]) -> ColumnElement[bool]:
        """Whether `owner_id` (a wall's column) is one of the walls counted."""
        if self.group_id is None:
            return owner_id < 0
        return owner_id == -self.group_id

    def conditions(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = [self.walls(Comment.owner_id)]
        if self.since is not None:
            conditions.append(Comment.date >= self.since)
        if self.until is not None:
            conditions.append(Comment.date < self.until)
        return conditions


@dataclass(frozen=True, slots=True)
class CommunityName:
    id: int
    screen_name: str
    name: str


@dataclass(frozen=True, slots=True)
class PeriodTotals:
    comments: int  # deleted ones included
    deleted: int
    authors: int  # distinct non-null `from_id`s
    posts: int  # distinct posts commented on
    first_at: datetime | None
    last_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuthorTotal:
    from_id: int
    comments: int
    deleted: int


@dataclass(frozen=True, slots=True)
class PostTotal:
    owner_id: int  # the wall: -group_id
    post_id: int
    comments: int
    date: datetime | None  # None: the post itself is not stored, only its comments
    excerpt: str | None


@dataclass(frozen=True, slots=True)
class LemmaTotal:
    term: str
    occurrences: int
    comments: int  # analysed comments containing it


def _day(dialect: str) -> ColumnElement[str]:
    """A comment's UTC day as 'YYYY-MM-DD' (constants inlined: GROUP BY repeats the expression,
    and PostgreSQL would not match two copies with separate bound parameters)."""
    if dialect == "postgresql":
        utc = func.timezone(literal_column("'UTC'"), Comment.date)
        return func.to_char(utc, literal_column("'YYYY-MM-DD'"))
    # SQLite stores UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'.
    return func.substr(Comment.date, 1, 10)


def _deleted() -> ColumnElement[int]:
    return func.coalesce(func.sum(case((Comment.is_deleted, 1), else_=0), type_=Integer), 0)


async def community_name(session: AsyncSession, community_id: int) -> CommunityName | None:
    """The stored community's names, or None if it is not stored."""
    row = await session.get(Community, community_id)
    return CommunityName(row.id, row.screen_name, row.name) if row is not None else None


async def community_count(session: AsyncSession) -> int:
    """How many communities are stored."""
    return int(await session.scalar(select(func.count()).select_from(Community)) or 0)


async def period_totals(session: AsyncSession, period: CommunityPeriod) -> PeriodTotals:
    """Counts of the period's comments, and the first and last comment's date."""
    # Posts are (wall, post) pairs: every community numbers its posts from 1.
    commented = select(Comment.owner_id, Comment.post_id).where(*period.conditions()).distinct()
    posts_count = select(func.count()).select_from(commented.subquery()).scalar_subquery()
    total, deleted, authors, posts, first_at, last_at = (
        await session.execute(
            select(
                func.count(),
                _deleted(),
                func.count(distinct(Comment.from_id)),
                posts_count,
                func.min(Comment.date),
                func.max(Comment.date),
            ).where(*period.conditions())
        )
    ).one()
    return PeriodTotals(int(total), int(deleted), int(authors), int(posts), first_at, last_at)


async def counts_by_day(
    session: AsyncSession, period: CommunityPeriod
) -> dict[date, tuple[int, int]]:
    """{UTC day: (comments, deleted)} of the days with comments."""
    day = _day(session.get_bind().dialect.name).label("day")
    return {
        date.fromisoformat(value): (int(count), int(dead))
        for value, count, dead in await session.execute(
            select(day, func.count(), _deleted())
            .where(*period.conditions())
            .group_by(day)
            .order_by(day)
        )
    }


async def top_authors(
    session: AsyncSession, period: CommunityPeriod, *, limit: int
) -> list[AuthorTotal]:
    """The authors with the most comments (ties: the lower id first)."""
    rows = await session.execute(
        select(Comment.from_id, func.count(), _deleted())
        .where(*period.conditions(), Comment.from_id.is_not(None))
        .group_by(Comment.from_id)
        .order_by(func.count().desc(), Comment.from_id)
        .limit(limit)
    )
    return [AuthorTotal(a, n, d) for a, n, d in rows if a is not None]


async def top_posts(
    session: AsyncSession, period: CommunityPeriod, *, limit: int, excerpt_chars: int
) -> list[PostTotal]:
    """The posts with the most comments (ties: the lower post id first, then the lower
    community id), with the stored post's date and the first `excerpt_chars` characters of its
    text."""
    post_counts = (
        await session.execute(
            select(Comment.owner_id, Comment.post_id, func.count())
            .where(*period.conditions())
            .group_by(Comment.owner_id, Comment.post_id)
            .order_by(func.count().desc(), Comment.post_id, Comment.owner_id.desc())
            .limit(limit)
        )
    ).all()
    if not post_counts:
        return []
    keys = [(owner_id, post_id) for owner_id, post_id, _ in post_counts]
    excerpt = func.substr(Post.text, 1, excerpt_chars)
    stored_posts = {
        (owner_id, post_id): (posted_at, text)
        for owner_id, post_id, posted_at, text in await session.execute(
            select(Post.owner_id, Post.post_id, Post.date, excerpt).where(
                tuple_(Post.owner_id, Post.post_id).in_(keys)
            )
        )
    }
    return [
        PostTotal(owner_id, post_id, count, *stored_posts.get((owner_id, post_id), (None, None)))
        for owner_id, post_id, count in post_counts
    ]


def _analysed(period: CommunityPeriod) -> Select[int]:
    """The count of the period's comments, not deleted, that have a stored analysis."""
    return (
        select(func.count())
        .select_from(CommentAnalysis)
        .join(
            Comment,
            and_(
                Comment.owner_id == CommentAnalysis.owner_id,
                Comment.comment_id == CommentAnalysis.comment_id,
            ),
        )
        .where(
            period.walls(CommentAnalysis.owner_id),
            Comment.is_deleted.is_(False),
            *period.conditions(),
        )
    )


async def analysed_count(session: AsyncSession, period: CommunityPeriod) -> int:
    """How many of the period's comments (not deleted) have a stored analysis."""
    return int(await session.scalar(_analysed(period)) or 0)


async def top_lemmas(
    session: AsyncSession,
    period: CommunityPeriod,
    *,
    keep: Callable[[str], bool],
    limit: int,
    chunk_size: int,
) -> list[LemmaTotal]:
    """The first `limit` lemmas that `keep` accepts, of the analyses of the period's comments
    (not deleted), by occurrences, then comments containing them, then the lemma.

    The lemma counts are summed by the database (one row per distinct lemma, best first), and
    the rows are streamed `chunk_size` at a time only until `limit` have passed `keep`: memory
    is bounded by the chunk, not by the community or its vocabulary.
    """
    dialect = session.get_bind().dialect.name
    # A table of (key, value) per lemma of each row's JSON object; a function in FROM may read
    # the tables before it (implicitly LATERAL on PostgreSQL, as on SQLite).
    each_name = "jsonb_each_text" if dialect == "postgresql" else "json_each"
    each = getattr(func, each_name)(CommentAnalysis.lemma_counts).table_valued("key", "value")
    occurrences = func.sum(cast(each.c.value, Integer)).label("occurrences")
    containing = func.count().label("containing")
    query = (
        _analysed(period)
        .with_only_columns(each.c.key, occurrences, containing)
        .join(each, true())
        .group_by(each.c.key)
        .order_by(occurrences.desc(), containing.desc(), each.c.key)
        .execution_options(yield_per=chunk_size)
    )
    found: list[LemmaTotal] = []
    result = await session.stream(query)
    async for chunk in result.partitions(chunk_size):
        for term, count, comments in chunk:
            if count > 0 and keep(term):
                found.append(LemmaTotal(term, int(count), int(comments)))
                if len(found) == limit:
                    break
        if len(found) == limit:
            break
        await asyncio.sleep(0)  # let the worker's loop run between chunks
    await result.close()
    return found


# -- every wall (statistics) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommunityRow:
    id: int
    screen_name: str
    name: str
    last_parsed_at: datetime | None


@dataclass(frozen=True, slots=True)
class WallTotals:
    comments: int = 0  # deleted ones included
    deleted: int = 0
    authors: int = 0  # distinct non-null `from_id`s
    first_at: datetime | None = None
    last_at: datetime | None = None


async def communities(
    session: AsyncSession, *, community_id: int | None = None
) -> list[CommunityRow]:
    """Every stored community (or the one `community_id`, if it is stored)."""
    query = select(Community.id, Community.screen_name, Community.name, Community.last_parsed_at)
    if community_id is not None:
        query = query.where(Community.id == community_id)
    rows = await session.execute(query)
    return [CommunityRow(*row) for row in rows]


def community_ids() -> Select[int]:
    """The ids of the stored communities, as a subquery for another package's statement."""
    return select(Community.id)


def _on_wall(
    owner_id: InstrumentedAttribute[int], community_id: int | None
) -> list[ColumnElement[bool]]:
    """The condition that `owner_id` is the wall of the community `community_id` (none: every
    wall)."""
    return [] if community_id is None else [owner_id == -community_id]


async def comment_totals_by_wall(
    session: AsyncSession, *, community_id: int | None = None
) -> dict[int, WallTotals]:
    """{wall owner id: its comments' counts}, of the walls with comments (of the community
    `community_id` only, if given)."""
    rows = await session.execute(
        select(
            Comment.owner_id,
            func.count(),
            func.sum(case((Comment.is_deleted, 1), else_=0), type_=Integer),
            func.count(distinct(Comment.from_id)),
            func.min(Comment.date),
            func.max(Comment.date),
        )
        .where(*_on_wall(Comment.owner_id, community_id))
        .group_by(Comment.owner_id)
    )
    return {
        owner: WallTotals(total, deleted or 0, authors, first_at, last_at)
        for owner, total, deleted, authors, first_at, last_at in rows
    }


async def post_counts_by_wall(
    session: AsyncSession, *, community_id: int | None = None
) -> dict[int, int]:
    """{wall owner id: stored posts}, of the walls with posts (of the community `community_id`
    only, if given)."""
    rows = await session.execute(
        select(Post.owner_id, func.count())
        .where(*_on_wall(Post.owner_id, community_id))
        .group_by(Post.owner_id)
    )
    return {owner: count for owner, count in rows}


async def analysed_counts_by_wall(
    session: AsyncSession, *, community_id: int | None = None
) -> dict[int, int]:
    """{wall owner id: analyses of its stored comments}, of the walls with any (of the
    community `community_id` only, if given)."""
    rows = await session.execute(
        select(CommentAnalysis.owner_id, func.count())
        .join(
            Comment,
            and_(
                Comment.owner_id == CommentAnalysis.owner_id,
                Comment.comment_id == CommentAnalysis.comment_id,
            ),
        )
        .where(*_on_wall(CommentAnalysis.owner_id, community_id))
        .group_by(CommentAnalysis.owner_id)
    )
    return {owner: count for owner, count in rows}


# -- removal of old comments (cleanup) --------------------------------------------------------


async def count_older_than(session: AsyncSession, cutoff: datetime) -> tuple[int, int]:
    """(comments, their analyses) of the comments dated before `cutoff`."""
    old_comments = Comment.date < cutoff
    comments = int(await session.scalar(select(func.count()).where(old_comments)) or 0)
    analyses = int(
        await session.scalar(
            select(func.count())
            .select_from(CommentAnalysis)
            .join(
                Comment,
                (Comment.owner_id == CommentAnalysis.owner_id)
                & (Comment.comment_id == CommentAnalysis.comment_id),
            )
            .where(old_comments)
        )
        or 0
    )
    return comments, analyses


async def delete_older_than(session: AsyncSession, cutoff: datetime, *, limit: int) -> int:
    """Delete up to `limit` comments dated before `cutoff`, with their analyses; how many
    comments were deleted (0: none is left)."""
    keys = (
        await session.execute(
            select(Comment.owner_id, Comment.comment_id).where(Comment.date < cutoff).limit(limit)
        )
    ).all()
    if not keys:
        return 0
    pairs = [tuple(key) for key in keys]
    await session.execute(
        delete(CommentAnalysis).where(
            tuple_(CommentAnalysis.owner_id, CommentAnalysis.comment_id).in_(pairs)
        )
    )
    await session.execute(
        delete(Comment).where(tuple_(Comment.owner_id, Comment.comment_id).in_(pairs))
    )
    return len(keys)
