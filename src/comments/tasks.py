"""Tasks of the comments pipeline: parsing VK, text analysis of stored comments."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import func, select

from src.arq.context import JobContext
from src.arq.exceptions import RetryLater
from src.arq.registry import registry
from src.comments.analysis import (
    CHUNK,
    CommentText,
    analyze,
    analyze_and_store,
    background_stats,
    comment_conditions,
    comment_pages,
    comments_by_ref,
    parse_ref,
    period_conditions,
    ref_of,
)
from src.comments.exceptions import VKNotConfigured
from src.comments.models import Comment
from src.comments.parsing import CommunityParser
from src.comments.schemas import COMMENT_REF_PATTERN, VK_ID_MAX
from src.config import load
from src.morphology.analyzer import MorphAnalyzer, create_analyzer
from src.morphology.keywords import CorpusStats, Keyword, KeywordExtractor
from src.vk.client import VKClient
from src.vk.config import VKSettings
from src.vk.exceptions import VKRetryableError
from src.vk.ratelimit import RedisRateLimiter

SCREEN_NAME = re.compile(r"^[A-Za-z0-9_.]{2,64}$")
# A job that would wait longer than this for the shared VK rate limit gives its worker slot back
# and runs again when the budget allows, rather than sleeping in the slot.
MAX_RATE_WAIT_SECONDS = 5.0


def exactly_one(*names: str) -> dict[str, Any]:
    """JSON Schema of a `give either … or …` rule: exactly one of the fields, and not null."""
    return {
        "oneOf": [
            {"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in names
        ]
    }


class ParseVKCommentsArgs(BaseModel):
    """Which community to read, and how much of it: give either group_id or screen_name."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            **exactly_one("group_id", "screen_name"),
            "examples": [{"group_id": 1, "limit": 10}],
        },
    )

    group_id: int | None = Field(
        None, gt=0, le=VK_ID_MAX, description="the community's id", examples=[1]
    )
    screen_name: str | None = Field(
        None,
        description="or its short name (e.g. `apiclub`)",
        examples=["apiclub"],
        json_schema_extra={"pattern": SCREEN_NAME.pattern},
    )
    limit: int = Field(100, ge=1, le=10_000, description="newest posts to read")
    post_ids: list[int] | None = Field(
        None,
        max_length=1000,
        description="read only these posts (ids on the community's wall)",
        json_schema_extra={
            "items": {"type": "integer", "exclusiveMinimum": 0, "maximum": VK_ID_MAX}
        },
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
        if value is not None and any(post_id > VK_ID_MAX for post_id in value):
            raise ValueError(f"post ids are at most {VK_ID_MAX}")
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
            owner_id, comment_id = parse_ref(ref)  # ValueError names the bad one
            # Stored as BIGINT: a larger id is refused here, not by the database in the job.
            if max(abs(owner_id), comment_id) > VK_ID_MAX:
                raise ValueError(f"ids in {ref!r} are at most {VK_ID_MAX}")
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
    description="stored comments as `{owner_id}_{comment_id}`, e.g. `-1_25`; each comment once",
    examples=[["-1_25", "-1_26"]],
    json_schema_extra={
        "items": {"type": "string", "pattern": COMMENT_REF_PATTERN},
        "uniqueItems": True,
    },
)


class AnalyzeArgs(BaseModel):
    """A text, or stored comments (their analyses are stored too): give either text or
    comment_ids."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            **exactly_one("text", "comment_ids"),
            "examples": [{"text": "Привет, мир!"}],
        },
    )

    text: str | None = Field(
        None,
        min_length=1,
        max_length=100_000,
        description="not blank",
        examples=["Привет, мир!"],
        json_schema_extra={"pattern": r"\S"},
    )
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
    """Which comments to find keywords in: a community (or one of its posts) in a period, or ids.
    Give either group_id (with post_id, since, until) or comment_ids; post_id needs the group_id
    of its community."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            **exactly_one("group_id", "comment_ids"),
            "dependentSchemas": {
                "post_id": {
                    "required": ["group_id"],
                    "properties": {"group_id": {"type": "integer"}},
                }
            },
            "examples": [{"group_id": 1, "top_n": 20}],
        },
    )

    group_id: int | None = Field(None, gt=0, le=VK_ID_MAX, examples=[1])
    post_id: int | None = Field(None, gt=0, le=VK_ID_MAX, description="one post of the community")
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
    """Run text operations over stored comments, in chunks, with progress: give either group_id
    or comment_ids."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            **exactly_one("group_id", "comment_ids"),
            "examples": [{"group_id": 1, "operations": ["morphology", "keywords"]}],
        },
    )

    comment_ids: list[str] | None = CommentRefs
    group_id: int | None = Field(None, gt=0, le=VK_ID_MAX)
    operations: list[Operation] = Field(
        min_length=1,
        description="`morphology` (stored per comment) and/or `keywords`, each operation once",
        json_schema_extra={"uniqueItems": True},
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
        text = args.text
        # Up to 100 000 characters: about a second of CPU, kept off the event loop.
        return await asyncio.to_thread(lambda: morph.analyze_text(text).to_dict())
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
    sessionmaker = ctx["sessionmaker"]
    extractor = KeywordExtractor(morph.settings, analyzer=morph)
    # Counts only (bounded, see `TermTally`): the analysed comments are dropped page by page.
    tally = extractor.new_tally()
    background: CorpusStats | None = None
    if args.comment_ids is not None:
        refs = [parse_ref(ref) for ref in args.comment_ids]
        async with sessionmaker() as session:
            comments = await comments_by_ref(session, refs)
        for start in range(0, len(comments), CHUNK):
            await analyze(morph, comments[start : start + CHUNK], tally=(extractor, tally))
        owners = {c.owner_id for c in comments}
        if len(owners) == 1 and comments:
            background = await background_stats(
                sessionmaker,
                extractor,
                morph,
                owner_id=next(iter(owners)),
                exclude_ids=[c.comment_id for c in comments],
            )
    else:
        owner_id = -(args.group_id or 0)
        narrowing = period_conditions(post_id=args.post_id, since=args.since, until=args.until)
        conditions = comment_conditions(
            owner_id=owner_id, post_id=args.post_id, since=args.since, until=args.until
        )
        async for page in comment_pages(sessionmaker, conditions):
            await analyze(morph, page, tally=(extractor, tally))
            await ctx["progress"](0, f"{tally.documents} comments read")
        if narrowing and tally.documents:
            background = await background_stats(
                sessionmaker, extractor, morph, owner_id=owner_id, exclude=narrowing
            )
    keywords = await asyncio.to_thread(
        extractor.rank, tally, top_n=args.top_n, background=background
    )
    return _keywords_result(keywords, documents=tally.documents, ranked=background is not None)


@registry.task(args=BatchArgs, timeout=3600)
async def process_batch_comments(ctx: JobContext, args: BatchArgs) -> dict[str, Any]:
    """Run `morphology` (stored per comment) and/or `keywords` over stored comments."""
    morph: MorphAnalyzer = ctx["morph"]  # type: ignore[typeddict-item]
    sessionmaker = ctx["sessionmaker"]
    extractor = KeywordExtractor(morph.settings, analyzer=morph)
    tally = extractor.new_tally()
    counting = (extractor, tally) if "keywords" in args.operations else None
    processed = 0
    chunks: AsyncIterator[Sequence[CommentText]]
    if args.comment_ids is not None:
        total = len(args.comment_ids)
        refs = [parse_ref(ref) for ref in args.comment_ids]
        async with sessionmaker() as reader:
            chunks = _in_chunks(await comments_by_ref(reader, refs))
    else:
        conditions = comment_conditions(owner_id=-(args.group_id or 0))
        async with sessionmaker() as reader:
            count = await reader.scalar(select(func.count()).where(*conditions))
        total = int(count or 0)
        chunks = comment_pages(sessionmaker, conditions)
    async for chunk in chunks:
        if "morphology" in args.operations:
            async with sessionmaker.begin() as writer:
                await analyze_and_store(writer, morph, chunk, tally=counting)
        else:
            await analyze(morph, chunk, tally=counting)
        processed += len(chunk)
        await ctx["progress"](100 * processed / max(1, total), f"{processed} of {total}")
    result: dict[str, Any] = {"comments": processed, "operations": args.operations}
    if "morphology" in args.operations:
        result["analyses_stored"] = processed
    if "keywords" in args.operations:
        keywords = await asyncio.to_thread(extractor.rank, tally, top_n=args.top_n)
        result["keywords"] = _keywords_result(keywords, documents=tally.documents, ranked=False)
    return result


async def _in_chunks(comments: Sequence[Comment]) -> AsyncIterator[Sequence[Comment]]:
    for start in range(0, len(comments), CHUNK):
        yield comments[start : start + CHUNK]
