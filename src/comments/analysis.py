"""Text analysis of stored comments: per-comment morphology (stored once) and keywords.

Memory: a community is read in pages of `CHUNK` comments (keyset pagination on (date,
comment_id), one short query per page: no transaction stays open for the whole job), each page
analysed, stored and folded into bounded aggregates (`TermTally`, `CorpusStats`), then dropped.

CPU: the analysis of a page runs in a worker thread (`off_loop`), not on the worker's event loop.
One comment may be 100 000 characters of distinct words (about a second of CPU), so slicing the
work between comments could not keep the loop responsive; a thread can, because the loop gets the
GIL back within the interpreter's switch interval (5 ms) whatever the text. The analyzer is
safe to share between threads: its parse cache is functools' C LRU, its tag table and pymorphy3's
own caches are idempotent memos, pymorphy3's dictionaries are read-only.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, TypeVar

from sqlalchemy import ColumnElement, and_, exists, not_, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.comments.models import Comment, CommentAnalysis
from src.morphology.analyzer import MorphAnalyzer, TextAnalysis
from src.morphology.keywords import CorpusStats, KeywordExtractor, TermTally

T = TypeVar("T")
R = TypeVar("R")

CHUNK = 500
BACKGROUND_LIMIT = 20_000
COMMENT_REF = re.compile(r"^(-?\d{1,19})_(\d{1,19})$")


def parse_ref(ref: str) -> tuple[int, int]:
    """`-1_25` -> (owner_id -1, comment_id 25)."""
    match = COMMENT_REF.match(ref)
    if match is None:
        raise ValueError(f"not a comment reference (owner_comment, e.g. -1_25): {ref!r}")
    return int(match.group(1)), int(match.group(2))


class CommentText(Protocol):
    """What the analysis reads of a comment (a `Comment` row or a `StoredText`)."""

    @property
    def owner_id(self) -> int: ...

    @property
    def comment_id(self) -> int: ...

    @property
    def text(self) -> str: ...


class StoredText(NamedTuple):
    """A comment's key, date and text: what a page holds (no ORM object per comment)."""

    owner_id: int
    comment_id: int
    date: datetime
    text: str


def ref_of(comment: CommentText | CommentAnalysis) -> str:
    return f"{comment.owner_id}_{comment.comment_id}"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def comments_by_ref(
    session: AsyncSession,
    refs: Sequence[tuple[int, int]],
    *,
    where: Sequence[ColumnElement[bool]] = (),
) -> list[Comment]:
    """The stored comments of `refs` (those matching `where` too)."""
    if not refs:
        return []
    rows = await session.scalars(
        select(Comment).where(tuple_(Comment.owner_id, Comment.comment_id).in_(list(refs)), *where)
    )
    return list(rows)


def unanalysed() -> ColumnElement[bool]:
    """Whether a comment has no stored analysis yet (one of an older text counts as stored)."""
    return ~exists().where(
        CommentAnalysis.owner_id == Comment.owner_id,
        CommentAnalysis.comment_id == Comment.comment_id,
    )


def comment_conditions(
    *,
    owner_id: int,
    post_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[ColumnElement[bool]]:
    """A community's comments that are not deleted, of one post and/or a period if given."""
    conditions: list[ColumnElement[bool]] = [
        Comment.owner_id == owner_id,
        Comment.is_deleted.is_(False),
    ]
    conditions += period_conditions(post_id=post_id, since=since, until=until)
    return conditions


def period_conditions(
    *, post_id: int | None = None, since: datetime | None = None, until: datetime | None = None
) -> list[ColumnElement[bool]]:
    """The narrowing part of `comment_conditions` (empty: the whole community)."""
    conditions: list[ColumnElement[bool]] = []
    if post_id is not None:
        conditions.append(Comment.post_id == post_id)
    if since is not None:
        conditions.append(Comment.date >= since)
    if until is not None:
        conditions.append(Comment.date < until)
    return conditions


async def comment_pages(
    sessionmaker: async_sessionmaker[AsyncSession],
    conditions: Sequence[ColumnElement[bool]],
    *,
    newest_first: bool = False,
    limit: int | None = None,
    size: int = CHUNK,
) -> AsyncIterator[list[StoredText]]:
    """The matching comments, oldest (or newest) first, `size` at a time, at most `limit`.

    Keyset pagination on (date, comment_id), unique within a community: each page is one short
    query that starts where the last one ended (an index range on (owner_id, date)), so memory
    holds one page and no cursor or transaction stays open between pages.
    """
    columns = (Comment.owner_id, Comment.comment_id, Comment.date, Comment.text)
    if newest_first:
        order = (Comment.date.desc(), Comment.comment_id.desc())
    else:
        order = (Comment.date.asc(), Comment.comment_id.asc())
    after: StoredText | None = None
    left = limit
    while left is None or left > 0:
        query = select(*columns).where(*conditions)
        if after is not None:
            if newest_first:
                query = query.where(
                    Comment.date <= after.date,
                    or_(Comment.date < after.date, Comment.comment_id < after.comment_id),
                )
            else:
                query = query.where(
                    Comment.date >= after.date,
                    or_(Comment.date > after.date, Comment.comment_id > after.comment_id),
                )
        wanted = size if left is None else min(size, left)
        async with sessionmaker() as session:
            rows = (await session.execute(query.order_by(*order).limit(wanted))).all()
        page = [StoredText(*row) for row in rows]
        if page:
            yield page
        if len(page) < wanted:
            return
        after = page[-1]
        if left is not None:
            left -= len(page)


async def off_loop(items: Sequence[T], work: Callable[[T], R]) -> list[R]:
    """`work` on each item, in order, in a worker thread: the event loop keeps running meanwhile.

    If the caller is cancelled (abort, timeout), the thread stops before the next item instead
    of running the rest of the page for nobody.
    """
    stop = threading.Event()

    def run() -> list[R]:
        done: list[R] = []
        for item in items:
            if stop.is_set():
                break
            done.append(work(item))
        return done

    try:
        return await asyncio.to_thread(run)
    finally:
        stop.set()


def _row(comment: CommentText, analysis: TextAnalysis, now: datetime) -> dict[str, Any]:
    """The `comment_analyses` row of one analysed comment."""
    return {
        "owner_id": comment.owner_id,
        "comment_id": comment.comment_id,
        "text_hash": text_hash(comment.text),
        "word_count": analysis.word_count,
        "has_cyrillic": analysis.has_cyrillic,
        "lemma_counts": dict(analysis.lemma_counts),
        "pos_counts": dict(analysis.pos_counts),
        "details": analysis.to_dict(tokens=False) | {"lemmas": [t.lemma for t in analysis.tokens]},
        "analyzed_at": now,
    }


async def analyze(
    analyzer: MorphAnalyzer,
    comments: Sequence[CommentText],
    *,
    tally: tuple[KeywordExtractor, TermTally] | None = None,
) -> list[TextAnalysis]:
    """Analyse comments off the event loop; their terms are added to `tally` (extractor, tally)."""

    def work(comment: CommentText) -> TextAnalysis:
        analysis = analyzer.analyze_text(comment.text, allow_empty=True)
        if tally is not None:
            extractor, counts = tally
            extractor.tally((analysis,), into=counts)
        return analysis

    return await off_loop(comments, work)


async def analyze_and_store(
    session: AsyncSession,
    analyzer: MorphAnalyzer,
    comments: Sequence[CommentText],
    *,
    tally: tuple[KeywordExtractor, TermTally] | None = None,
) -> list[TextAnalysis]:
    """Analyse comments (off the event loop), store their analyses, return them.

    The terms are added to `tally` (extractor, tally) as each comment is analysed.
    """
    now = datetime.now(UTC)

    def work(comment: CommentText) -> tuple[TextAnalysis, dict[str, Any]]:
        analysis = analyzer.analyze_text(comment.text, allow_empty=True)
        if tally is not None:
            extractor, counts = tally
            extractor.tally((analysis,), into=counts)
        return analysis, _row(comment, analysis, now)

    done = await off_loop(comments, work)
    rows = [row for _, row in done]
    if rows:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(CommentAnalysis)
        statement = statement.on_conflict_do_update(
            index_elements=[CommentAnalysis.owner_id, CommentAnalysis.comment_id],
            set_={
                name: statement.excluded[name]
                for name in (
                    "text_hash",
                    "word_count",
                    "has_cyrillic",
                    "lemma_counts",
                    "pos_counts",
                    "details",
                    "analyzed_at",
                )
            },
        )
        await session.execute(statement, rows)
    return [analysis for analysis, _ in done]


async def get_analysis(
    session: AsyncSession, *, owner_id: int, comment_id: int
) -> CommentAnalysis | None:
    return await session.get(CommentAnalysis, (owner_id, comment_id), populate_existing=True)


async def background_stats(
    sessionmaker: async_sessionmaker[AsyncSession],
    extractor: KeywordExtractor,
    analyzer: MorphAnalyzer,
    *,
    owner_id: int,
    exclude: Sequence[ColumnElement[bool]] = (),
    exclude_ids: Sequence[int] = (),
) -> CorpusStats | None:
    """Document frequencies of a community's other comments (its `BACKGROUND_LIMIT` newest).

    "Other": not matching all of `exclude` (the target's post/period conditions), and not
    among `exclude_ids` (the target's comment ids). None if there are none.
    """
    conditions = comment_conditions(owner_id=owner_id)
    if exclude:
        conditions.append(not_(and_(*exclude)))
    if exclude_ids:
        conditions.append(Comment.comment_id.not_in(list(exclude_ids)))
    stats = CorpusStats()

    def work(comment: CommentText) -> None:
        extractor.corpus_stats((analyzer.analyze_text(comment.text, allow_empty=True),), into=stats)

    pages = comment_pages(sessionmaker, conditions, newest_first=True, limit=BACKGROUND_LIMIT)
    async for page in pages:
        await off_loop(page, work)
    return stats if stats.documents else None
