"""The analysis tasks keep the worker's event loop running while they compute.

Each test runs a real task function on crafted comments (tens of thousands of distinct long
Russian-like words: seconds of pymorphy3 work for a fresh analyzer) while a ticker coroutine on
the same loop notes the longest time it went without being scheduled. A task that computed on
the loop would hold it for the whole chunk; leases (15 s by default, 2 s at least), heartbeats
and the worker's other jobs need it every second or so. The results must be what the same
analysis gives when run directly.
"""

# Russian-like text: Cyrillic letters that look like Latin ones are meant.

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable
from dataclasses import asdict
from functools import cache
from typing import Any, TypeVar, cast

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq.context import JobContext
from src.comments import service
from src.comments.models import CommentAnalysis
from src.comments.tasks import (
    AnalyzeArgs,
    BatchArgs,
    KeywordsArgs,
    analyze_text_morphology,
    extract_keywords,
    process_batch_comments,
)
from src.morphology.analyzer import MorphAnalyzer
from src.morphology.keywords import KeywordExtractor
from tests.morphology.conftest import make_settings

T = TypeVar("T")

OWNER = -9
LONG_COMMENTS = 12  # on post 1
LONG_CHARS = 90_000  # each: over a million characters of distinct words in all, seconds of CPU
OTHER = [  # post 2: the background of post 1's keywords
    "Горячей воды нет третий день",
    "Во дворе поставили новые скамейки",
    "Концерт в парке понравился",
]
# The most CPU the loop's thread may spend without yielding: far below the 15 s lease (and its
# 2 s minimum) and the seconds a chunk of this text costs on the loop, far above a step of
# database I/O or result handling.
MAX_GAP = 0.5

_CONSONANTS = "бвгджзклмнпрстфхцчшщ"
_VOWELS = "аеиоуыэюя"
_ENDINGS = ("ость", "ение", "ованный", "ировать", "ующийся", "ательный", "ничество", "ка")


@cache
def long_comments() -> list[str]:
    """Comments of distinct made-up words, each analysed by pymorphy3's predictors (slow)."""
    rng = random.Random(20261202)
    seen: set[str] = set()
    comments = []
    for _ in range(LONG_COMMENTS):
        words: list[str] = []
        size = 0
        while size < LONG_CHARS:
            stem = "".join(
                rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(rng.randint(4, 8))
            )
            word = rng.choice(("пере", "раз", "")) + stem + rng.choice(_ENDINGS)
            if rng.random() < 0.2:
                word += "-" + rng.choice(_CONSONANTS) + rng.choice(_VOWELS) + "ка"
            if word in seen:
                continue
            seen.add(word)
            words.append(word)
            size += len(word) + 1
        comments.append(" ".join(words))
    return comments


@pytest.fixture(autouse=True)
async def stored(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with sessionmaker.begin() as session:
        await session.execute(text("TRUNCATE comments, posts, communities, comment_analyses"))
        for post_id, texts in ((1, long_comments()), (2, OTHER)):
            comments = [
                {
                    "id": post_id * 100 + i,
                    "from_id": 10 + i,
                    "date": 1_700_000_000 + post_id * 1000 + i,
                    "text": body,
                    "likes": {"count": 0},
                }
                for i, body in enumerate(texts)
            ]
            await service.upsert_comments(
                session, owner_id=OWNER, post_id=post_id, comments=comments
            )


@pytest.fixture
def analyzer() -> MorphAnalyzer:
    """A fresh analyzer: an empty parse cache, so every crafted word costs its full parse."""
    return MorphAnalyzer(make_settings())


def job_context(
    sessionmaker: async_sessionmaker[AsyncSession], analyzer: MorphAnalyzer
) -> JobContext:
    """What the worker hands the task (the parts these tasks read)."""

    async def progress(percent: float, message: str | None = None) -> None:
        return None

    ctx: dict[str, Any] = {
        "sessionmaker": sessionmaker,
        "morph": analyzer,
        "progress": progress,
        "job_id": "loop-test",
        "job_try": 1,
    }
    return cast(JobContext, ctx)


async def with_ticker(work: Awaitable[T]) -> tuple[T, float]:
    """`work`'s result, and the most CPU time the loop's thread spent between two runs of a
    ticking coroutine: the time the loop was held by code running on it.

    CPU time of the loop's thread, not wall time: on a machine busy with other work the thread
    may wait long for a core (or for the GIL, held by the analysis thread) without anything
    holding the loop; a task computing on the loop spends that CPU on the loop's thread."""
    # (What earlier test files left in this process is frozen out of the collector's sight by
    # tests/conftest.py: a full collection of it on the loop's thread took 0.75 s of CPU in a
    # whole-suite run, which is the test process' doing, not the job's.)
    task = asyncio.ensure_future(work)
    longest = 0.0
    last = time.thread_time()
    while not task.done():
        await asyncio.sleep(0.005)
        now = time.thread_time()
        longest = max(longest, now - last)
        last = now
    return await task, longest


def keyword_dicts(extractor: KeywordExtractor, documents: Any, **kwargs: Any) -> list[Any]:
    return [asdict(keyword) for keyword in extractor.extract(documents, **kwargs)]


@pytest.mark.timeout(120)
async def test_batch_processing_leaves_the_loop_free(
    sessionmaker: async_sessionmaker[AsyncSession], analyzer: MorphAnalyzer
) -> None:
    args = BatchArgs(group_id=-OWNER, operations=["morphology", "keywords"], top_n=30)

    result, gap = await with_ticker(
        process_batch_comments(job_context(sessionmaker, analyzer), args)
    )

    assert gap < MAX_GAP, f"the event loop was held for {gap:.2f} s of CPU"
    texts = long_comments() + OTHER
    assert result["comments"] == result["analyses_stored"] == len(texts)
    extractor = KeywordExtractor(make_settings(), analyzer=analyzer)
    expected = keyword_dicts(extractor, analyzer.analyze_many(texts), top_n=30)
    assert result["keywords"]["keywords"] == expected
    async with sessionmaker() as session:
        stored = await session.get(CommentAnalysis, (OWNER, 100))
        assert stored is not None
        assert stored.lemma_counts == dict(analyzer.analyze_text(texts[0]).lemma_counts)
        rows = await session.scalars(select(CommentAnalysis.comment_id))
        assert len(list(rows)) == len(texts)


@pytest.mark.timeout(120)
async def test_keywords_against_the_background_leave_the_loop_free(
    sessionmaker: async_sessionmaker[AsyncSession], analyzer: MorphAnalyzer
) -> None:
    args = KeywordsArgs(group_id=-OWNER, post_id=1, top_n=30)

    result, gap = await with_ticker(extract_keywords(job_context(sessionmaker, analyzer), args))

    assert gap < MAX_GAP, f"the event loop was held for {gap:.2f} s of CPU"
    assert result["documents"] == LONG_COMMENTS
    assert result["ranking"].startswith("tf-idf")
    extractor = KeywordExtractor(make_settings(), analyzer=analyzer)
    background = extractor.corpus_stats(analyzer.analyze_many(OTHER))
    target = analyzer.analyze_many(long_comments())
    assert result["keywords"] == keyword_dicts(extractor, target, top_n=30, background=background)


@pytest.mark.timeout(120)
async def test_analysing_stored_comments_leaves_the_loop_free(
    sessionmaker: async_sessionmaker[AsyncSession], analyzer: MorphAnalyzer
) -> None:
    refs = [f"{OWNER}_{100 + i}" for i in range(LONG_COMMENTS)]
    args = AnalyzeArgs(comment_ids=refs)

    result, gap = await with_ticker(
        analyze_text_morphology(job_context(sessionmaker, analyzer), args)
    )

    assert gap < MAX_GAP, f"the event loop was held for {gap:.2f} s of CPU"
    assert result["analyzed"] == LONG_COMMENTS
    first = analyzer.analyze_text(long_comments()[0])
    assert result["comments"][0] == {
        "comment": refs[0],
        "word_count": first.word_count,
        "has_cyrillic": True,
        "top_lemmas": first.lemma_counts.most_common(10),
    }
