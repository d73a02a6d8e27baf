"""Text analysis of stored comments: per-comment morphology (stored once) and keywords.

CPU-bound work: callers run it in the worker, in chunks, yielding to the event loop between
chunks (`CHUNK`) so that the worker keeps renewing its leases and answering aborts.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from src.comments.models import Comment, CommentAnalysis
from src.morphology.analyzer import MorphAnalyzer, TextAnalysis
from src.morphology.keywords import KeywordExtractor

CHUNK = 500
BACKGROUND_LIMIT = 20_000
COMMENT_REF = re.compile(r"^(-?\d{1,19})_(\d{1,19})$")


def parse_ref(ref: str) -> tuple[int, int]:
    """`-1_25` -> (owner_id -1, comment_id 25)."""
    match = COMMENT_REF.match(ref)
    if match is None:
        raise ValueError(f"not a comment reference (owner_comment, e.g. -1_25): {ref!r}")
    return int(match.group(1)), int(match.group(2))


def ref_of(comment: Comment | CommentAnalysis) -> str:
    return f"{comment.owner_id}_{comment.comment_id}"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def comments_by_ref(session: AsyncSession, refs: Sequence[tuple[int, int]]) -> list[Comment]:
    if not refs:
        return []
    rows = await session.scalars(
        select(Comment).where(tuple_(Comment.owner_id, Comment.comment_id).in_(list(refs)))
    )
    return list(rows)


def comments_query(
    *,
    owner_id: int | None = None,
    post_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[Comment]:
    query = select(Comment).where(Comment.is_deleted.is_(False))
    if owner_id is not None:
        query = query.where(Comment.owner_id == owner_id)
    if post_id is not None:
        query = query.where(Comment.post_id == post_id)
    if since is not None:
        query = query.where(Comment.date >= since)
    if until is not None:
        query = query.where(Comment.date < until)
    return query.order_by(Comment.date, Comment.comment_id)


async def stream(session: AsyncSession, query: Select[Comment]) -> AsyncIterator[list[Comment]]:
    """The query's comments in chunks, without loading them all at once."""
    result = await session.stream_scalars(query.execution_options(yield_per=CHUNK))
    async for chunk in result.partitions(CHUNK):
        yield list(chunk)


async def analyze_and_store(
    session: AsyncSession, analyzer: MorphAnalyzer, comments: Sequence[Comment]
) -> list[TextAnalysis]:
    """Analyse comments whose stored analysis is missing or stale; store; return all analyses."""
    analyses = [analyzer.analyze_text(c.text, allow_empty=True) for c in comments]
    now = datetime.now(UTC)
    rows = [
        {
            "owner_id": comment.owner_id,
            "comment_id": comment.comment_id,
            "text_hash": text_hash(comment.text),
            "word_count": analysis.word_count,
            "has_cyrillic": analysis.has_cyrillic,
            "lemma_counts": dict(analysis.lemma_counts),
            "pos_counts": dict(analysis.pos_counts),
            "details": analysis.to_dict(tokens=False)
            | {"lemmas": [t.lemma for t in analysis.tokens]},
            "analyzed_at": now,
        }
        for comment, analysis in zip(comments, analyses, strict=True)
    ]
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
    await asyncio.sleep(0)  # let the worker's loop run between chunks
    return analyses


async def get_analysis(
    session: AsyncSession, *, owner_id: int, comment_id: int
) -> CommentAnalysis | None:
    return await session.get(CommentAnalysis, (owner_id, comment_id), populate_existing=True)


async def background_stats(
    session: AsyncSession,
    extractor: KeywordExtractor,
    analyzer: MorphAnalyzer,
    *,
    owner_id: int,
    exclude: set[tuple[int, int]],
) -> Any:
    """Document frequencies of a community's other comments (its most recent ones)."""
    query = (
        select(Comment)
        .where(Comment.owner_id == owner_id, Comment.is_deleted.is_(False))
        .order_by(Comment.date.desc())
        .limit(BACKGROUND_LIMIT + len(exclude))
    )
    documents: list[TextAnalysis] = []
    async for chunk in stream(session, query):
        texts = [c.text for c in chunk if (c.owner_id, c.comment_id) not in exclude]
        documents += analyzer.analyze_many(texts)
        await asyncio.sleep(0)
    if not documents:
        return None
    return extractor.corpus_stats(documents)
