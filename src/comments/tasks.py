"""Tasks of the comments pipeline: parsing VK, text analysis of stored comments."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import func, select

from src.arq.context import JobContext
from src.arq.exceptions import RetryLater
from src.arq.registry import registry
from src.comments.analysis import (
    CHUNK,
    analyze_and_store,
    background_stats,
    comments_by_ref,
    comments_query,
    parse_ref,
    ref_of,
    stream,
)
from src.comments.exceptions import VKNotConfigured
from src.comments.models import Comment
from src.comments.parsing import CommunityParser
from src.config import load
from src.morphology.analyzer import MorphAnalyzer, TextAnalysis, create_analyzer
from src.morphology.keywords import Keyword, KeywordExtractor
from src.vk.client import VKClient
from src.vk.config import VKSettings
from src.vk.exceptions import VKRetryableError
from src.vk.ratelimit import RedisRateLimiter

SCREEN_NAME = re.compile(r"^[A-Za-z0-9_.]{2,64}$")
# A job that would wait longer than this for the shared VK rate limit gives its worker slot back
# and runs again when the budget allows, rather than sleeping in the slot.
MAX_RATE_WAIT_SECONDS = 5.0


class ParseVKCommentsArgs(BaseModel):
    """Which community to read, and how much of it."""

    group_id: int | None = Field(None, gt=0, description="the community's id", examples=[1])
    screen_name: str | None = Field(
        None, description="or its short name (e.g. `apiclub`)", examples=["apiclub"]
    )
    limit: int = Field(100, ge=1, le=10_000, description="newest posts to read")
    post_ids: list[int] | None = Field(
        None, max_length=1000, description="read only these posts (ids on the community's wall)"
    )
    since: datetime | None = Field(None, description="only posts published at or after this time")

    @field_validator("screen_name")
    @classmethod
    def _check_screen_name(cls, value: str | None) -> str | None:
        if value is not None and not SCREEN_NAME.match(value):
            raise ValueError("must be 2-64 letters, digits, '_' or '.'")
        return value

    @field_validator("post_ids")
    @classmethod
    def _check_post_ids(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(post_id <= 0 for post_id in value):
            raise ValueError("post ids are positive")
        return value

    @field_validator("since")
    @classmethod
    def _check_since(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a timezone, e.g. 2026-01-01T00:00:00Z")
        return value

    @model_validator(mode="after")
    def _one_community(self) -> Self:
        if (self.group_id is None) == (self.screen_name is None):
            raise ValueError("give either group_id or screen_name")
        return self


@registry.on_worker_startup
async def open_vk_client(ctx: dict[str, Any]) -> None:
    """One VK client per worker process, sharing the token's request budget through Redis."""
    settings = load(VKSettings)
    if settings.token is None:
        ctx["vk_client"] = None
        return
    ctx["vk_client"] = VKClient(
        settings,
        limiter=RedisRateLimiter.from_settings(ctx["redis"], settings),
        max_rate_wait=MAX_RATE_WAIT_SECONDS,
    )


@registry.on_worker_shutdown
async def close_vk_client(ctx: dict[str, Any]) -> None:
    client: VKClient | None = ctx.get("vk_client")
    if client is not None:
        await client.aclose()


@registry.task(args=ParseVKCommentsArgs, timeout=3600)
async def parse_vk_comments(ctx: JobContext, args: ParseVKCommentsArgs) -> dict[str, Any]:
    """Fetch a VK community's posts and all their comments (threads included) and store them."""
    client: VKClient | None = ctx.get("vk_client")  # type: ignore[assignment]
    if client is None:
        raise VKNotConfigured()
    parser = CommunityParser(
        client,
        ctx["sessionmaker"],
        redis=ctx["redis"],
        job_id=ctx["job_id"],
        progress=ctx["progress"],
    )
    try:
        report = await parser.run(
            group_id=args.group_id,
            screen_name=args.screen_name,
            limit=args.limit,
            post_ids=args.post_ids,
            since=args.since,
        )
    except VKRetryableError as exc:
        # Stored posts stay stored; the next try continues with the rest.
        raise RetryLater(f"VK: {exc.detail}", defer=exc.retry_after) from exc
    return report.as_result()


# -- text analysis ------------------------------------------------------------------------------


def _check_refs(value: list[str] | None) -> list[str] | None:
    if value is not None:
        for ref in value:
            parse_ref(ref)  # ValueError names the bad one
        if len(set(value)) != len(value):
            raise ValueError("each comment once")
    return value


def check_aware(value: datetime | None) -> datetime | None:
    """A validator of `since`/`until`: a time without a timezone is refused."""
    if value is not None and value.tzinfo is None:
        raise ValueError("needs a timezone, e.g. 2026-01-01T00:00:00Z")
    return value


CommentRefs = Field(
    None,
    min_length=1,
    max_length=1000,
    description="stored comments as `{owner_id}_{comment_id}`, e.g. `-1_25`",
    examples=[["-1_25", "-1_26"]],
)


class AnalyzeArgs(BaseModel):
    """A text, or stored comments (their analyses are stored too)."""

    text: str | None = Field(None, min_length=1, max_length=100_000, examples=["Привет, мир!"])
    comment_ids: list[str] | None = CommentRefs

    _refs = field_validator("comment_ids")(_check_refs)

    @model_validator(mode="after")
    def _one_input(self) -> Self:
        if (self.text is None) == (self.comment_ids is None):
            raise ValueError("give either text or comment_ids")
        if self.text is not None and not self.text.strip():
            raise ValueError("text is blank")
        return self


class KeywordsArgs(BaseModel):
    """Which comments to find keywords in: a community (or one of its posts) in a period, or ids."""

    group_id: int | None = Field(None, gt=0, examples=[1])
    post_id: int | None = Field(None, gt=0, description="one post of the community")
    comment_ids: list[str] | None = CommentRefs
    top_n: int = Field(20, ge=1, le=200)
    since: datetime | None = None
    until: datetime | None = None

    _refs = field_validator("comment_ids")(_check_refs)
    _aware = field_validator("since", "until")(check_aware)

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.group_id is None) == (self.comment_ids is None):
            raise ValueError("give either group_id (with post_id, since, until) or comment_ids")
        if self.post_id is not None and self.group_id is None:
            raise ValueError("post_id needs the group_id of its community")
        return self


Operation = Literal["morphology", "keywords"]


class BatchArgs(BaseModel):
    """Run text operations over stored comments, in chunks, with progress."""

    comment_ids: list[str] | None = CommentRefs
    group_id: int | None = Field(None, gt=0)
    operations: list[Operation] = Field(
        min_length=1, description="`morphology` (stored per comment) and/or `keywords`"
    )
    top_n: int = Field(20, ge=1, le=200)

    _refs = field_validator("comment_ids")(_check_refs)

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.group_id is None) == (self.comment_ids is None):
            raise ValueError("give either group_id or comment_ids")
        if len(set(self.operations)) != len(self.operations):
            raise ValueError("each operation once")
        return self


@registry.on_worker_startup
async def open_analyzer(ctx: dict[str, Any]) -> None:
    """One morphological analyzer per worker process (the dictionaries load once)."""
    ctx["morph"] = create_analyzer()


def _keywords_result(keywords: list[Keyword], *, documents: int, ranked: bool) -> dict[str, Any]:
    return {
        "documents": documents,
        "ranking": "tf-idf against the community's other comments" if ranked else "frequency",
        "keywords": [asdict(keyword) for keyword in keywords],
    }


@registry.task(args=AnalyzeArgs, timeout=600)
async def analyze_text_morphology(ctx: JobContext, args: AnalyzeArgs) -> dict[str, Any]:
    """Lemmas, parts of speech and grammemes of a text, or of stored comments (stored too)."""
    morph: MorphAnalyzer = ctx["morph"]  # type: ignore[typeddict-item]
    if args.text is not None:
        return morph.analyze_text(args.text).to_dict()
    refs = [parse_ref(ref) for ref in args.comment_ids or []]
    async with ctx["sessionmaker"].begin() as session:
        comments = await comments_by_ref(session, refs)
        analyses = await analyze_and_store(session, morph, comments)
    found = {(c.owner_id, c.comment_id) for c in comments}
    return {
        "analyzed": len(comments),
        "missing": [f"{o}_{c}" for o, c in refs if (o, c) not in found],
        "comments": [
            {
                "comment": ref_of(comment),
                "word_count": analysis.word_count,
                "has_cyrillic": analysis.has_cyrillic,
                "top_lemmas": analysis.lemma_counts.most_common(10),
            }
            for comment, analysis in zip(comments, analyses, strict=True)
        ],
    }


@registry.task(args=KeywordsArgs, timeout=1800)
async def extract_keywords(ctx: JobContext, args: KeywordsArgs) -> dict[str, Any]:
    """Keywords of a set of comments, ranked against the community's other comments."""
    morph: MorphAnalyzer = ctx["morph"]  # type: ignore[typeddict-item]
    extractor = KeywordExtractor(analyzer=morph)
    documents: list[TextAnalysis] = []
    async with ctx["sessionmaker"]() as session:
        if args.comment_ids is not None:
            refs = [parse_ref(ref) for ref in args.comment_ids]
            comments = await comments_by_ref(session, refs)
            documents = morph.analyze_many(c.text for c in comments)
            owners = {c.owner_id for c in comments}
            target = {(c.owner_id, c.comment_id) for c in comments}
            narrowed = len(owners) == 1
        else:
            owner_id = -(args.group_id or 0)
            query = comments_query(
                owner_id=owner_id, post_id=args.post_id, since=args.since, until=args.until
            )
            target = set()
            async for chunk in stream(session, query):
                documents += morph.analyze_many(c.text for c in chunk)
                target.update((c.owner_id, c.comment_id) for c in chunk)
                await ctx["progress"](0, f"{len(documents)} comments read")
            owners = {owner_id}
            narrowed = args.post_id is not None or args.since is not None or args.until is not None
        background = None
        if narrowed and documents:
            background = await background_stats(
                session, extractor, morph, owner_id=next(iter(owners)), exclude=target
            )
    keywords = extractor.extract(documents, top_n=args.top_n, background=background)
    return _keywords_result(keywords, documents=len(documents), ranked=background is not None)


@registry.task(args=BatchArgs, timeout=3600)
async def process_batch_comments(ctx: JobContext, args: BatchArgs) -> dict[str, Any]:
    """Run `morphology` (stored per comment) and/or `keywords` over stored comments."""
    morph: MorphAnalyzer = ctx["morph"]  # type: ignore[typeddict-item]
    sessionmaker = ctx["sessionmaker"]
    documents: list[TextAnalysis] = []
    processed = 0
    async with sessionmaker() as reader:
        if args.comment_ids is not None:
            total = len(args.comment_ids)
            refs = [parse_ref(ref) for ref in args.comment_ids]
            chunks: AsyncIterator[list[Comment]] = _in_chunks(await comments_by_ref(reader, refs))
        else:
            total = int(
                await reader.scalar(
                    select(func.count()).select_from(
                        comments_query(owner_id=-(args.group_id or 0)).subquery()
                    )
                )
                or 0
            )
            chunks = stream(reader, comments_query(owner_id=-(args.group_id or 0)))
        async for chunk in chunks:
            if "morphology" in args.operations:
                async with sessionmaker.begin() as writer:
                    analyses = await analyze_and_store(writer, morph, chunk)
            else:
                analyses = morph.analyze_many(c.text for c in chunk)
            if "keywords" in args.operations:
                documents += analyses
            processed += len(chunk)
            await ctx["progress"](100 * processed / max(1, total), f"{processed} of {total}")
    result: dict[str, Any] = {"comments": processed, "operations": args.operations}
    if "morphology" in args.operations:
        result["analyses_stored"] = processed
    if "keywords" in args.operations:
        keywords = KeywordExtractor(analyzer=morph).extract(documents, top_n=args.top_n)
        result["keywords"] = _keywords_result(keywords, documents=len(documents), ranked=False)
    return result


async def _in_chunks(comments: list[Comment]) -> AsyncIterator[list[Comment]]:
    for start in range(0, len(comments), CHUNK):
        yield comments[start : start + CHUNK]
