"""Tasks of the comments pipeline: parsing VK, text analysis of stored comments."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import func, select

from src.arq.context import JobContext, Resource, WorkerContext, provide
from src.arq.exceptions import RetryLater
from src.arq.registry import TaskRegistry
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
    unanalysed,
)
from src.comments.exceptions import VKNotConfigured
from src.comments.models import Comment
from src.comments.parsing import CommunityParser
from src.comments.schemas import COMMENT_REF_PATTERN
from src.config import load
from src.morphology.analyzer import MorphAnalyzer, create_analyzer
from src.morphology.keywords import CorpusStats, Keyword, KeywordExtractor
from src.schemas import VK_ID_MAX, VkId, check_aware, exactly_one
from src.vk import breaker as vk_circuit
from src.vk.client import VKClient
from src.vk.config import VKSettings
from src.vk.exceptions import VKRetryableError, VKUnavailable
from src.vk.ratelimit import RedisRateLimiter

SCREEN_NAME = re.compile(r"^[A-Za-z0-9_.]{2,64}$")
# A job that would wait longer than this for the shared VK rate limit gives its worker slot back
# and runs again when the budget allows, rather than sleeping in the slot.
MAX_RATE_WAIT_SECONDS = 5.0

tasks = TaskRegistry()
# The VK circuit breaker's state in the health details.
tasks.on_service(vk_circuit.install)

# What this package's start-up hooks put into the worker context (None: no VK token set).
VK_CLIENT: Resource[VKClient | None] = Resource("vk_client")
MORPH: Resource[MorphAnalyzer] = Resource("morph")

# Limits stated once: the tasks' arguments and the endpoints' query parameters share them.
PostLimit = Annotated[int, Field(ge=1, le=10_000, description="newest posts to read")]
TopN = Annotated[int, Field(ge=1, le=200)]


class ParseVKCommentsArgs(BaseModel):
    """Which community to read, and how much of it: give either group_id or screen_name."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            **exactly_one("group_id", "screen_name"),
            "examples": [{"group_id": 1, "limit": 10}],
        },
    )

    group_id: VkId | None = Field(None, description="the community's id", examples=[1])
    screen_name: str | None = Field(
        None,
        description="or its short name (e.g. `apiclub`)",
        examples=["apiclub"],
        json_schema_extra={"pattern": SCREEN_NAME.pattern},
    )
    limit: PostLimit = 100
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

    _aware = field_validator("since")(check_aware)

    @model_validator(mode="after")
    def _one_community(self) -> Self:
        if (self.group_id is None) == (self.screen_name is None):
            raise ValueError("give either group_id or screen_name")
        return self


@tasks.on_worker_startup
async def open_vk_client(ctx: WorkerContext) -> None:
    """One VK client per worker process, sharing the token's request budget through Redis."""
    settings = load(VKSettings)
    if settings.token is None:
        provide(ctx, VK_CLIENT, None)
        return
    client = VKClient(
        settings,
        limiter=RedisRateLimiter.from_settings(ctx["redis"], settings),
        max_rate_wait=MAX_RATE_WAIT_SECONDS,
        breaker=vk_circuit.vk_breaker(ctx["redis"], settings),
    )
    provide(ctx, VK_CLIENT, client)


@tasks.on_worker_shutdown
async def close_vk_client(ctx: WorkerContext) -> None:
    client = VK_CLIENT.get(ctx, None)
    if client is not None:
        await client.aclose()


@tasks.task(args=ParseVKCommentsArgs, timeout=3600)
async def parse_vk_comments(ctx: JobContext, args: ParseVKCommentsArgs) -> dict[str, Any]:
    """Fetch a VK community's posts and all their comments (threads included) and store them."""
    client = VK_CLIENT.get(ctx)
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
    except VKUnavailable as exc:
        # VK's circuit is open: wait it out without spending a try.
        raise RetryLater(exc.reason, defer=exc.retry_after, keep_try=True) from exc
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

    group_id: VkId | None = Field(None, examples=[1])
    post_id: VkId | None = Field(None, description="one post of the community")
    comment_ids: list[str] | None = CommentRefs
    top_n: TopN = 20
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
    group_id: VkId | None = None
    operations: list[Operation] = Field(
        min_length=1,
        description="`morphology` (stored per comment) and/or `keywords`, each operation once",
        json_schema_extra={"uniqueItems": True},
    )
    top_n: TopN = 20
    only_unanalysed: bool = Field(
        False,
        description="only the comments that have no stored analysis yet (the new ones since "
        "the last morphology); an analysis of an older text still counts as stored",
    )

    _refs = field_validator("comment_ids")(_check_refs)

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.group_id is None) == (self.comment_ids is None):
            raise ValueError("give either group_id or comment_ids")
        if len(set(self.operations)) != len(self.operations):
            raise ValueError("each operation once")
        return self


@tasks.on_worker_startup
async def open_analyzer(ctx: WorkerContext) -> None:
    """One morphological analyzer per worker process (the dictionaries load once)."""
    provide(ctx, MORPH, create_analyzer())


def _keywords_result(keywords: list[Keyword], *, documents: int, ranked: bool) -> dict[str, Any]:
    return {
        "documents": documents,
        "ranking": "tf-idf against the community's other comments" if ranked else "frequency",
        "keywords": [asdict(keyword) for keyword in keywords],
    }


@tasks.task(args=AnalyzeArgs, timeout=600)
async def analyze_text_morphology(ctx: JobContext, args: AnalyzeArgs) -> dict[str, Any]:
    """Lemmas, parts of speech and grammemes of a text, or of stored comments (stored too)."""
    morph = MORPH.get(ctx)
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


@tasks.task(args=KeywordsArgs, timeout=1800)
async def extract_keywords(ctx: JobContext, args: KeywordsArgs) -> dict[str, Any]:
    """Keywords of a set of comments, ranked against the community's other comments."""
    morph = MORPH.get(ctx)
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


@tasks.task(args=BatchArgs, timeout=3600)
async def process_batch_comments(ctx: JobContext, args: BatchArgs) -> dict[str, Any]:
    """Run `morphology` (stored per comment) and/or `keywords` over stored comments (or only
    over those without a stored analysis)."""
    morph = MORPH.get(ctx)
    sessionmaker = ctx["sessionmaker"]
    extractor = KeywordExtractor(morph.settings, analyzer=morph)
    tally = extractor.new_tally()
    counting = (extractor, tally) if "keywords" in args.operations else None
    new_only = [unanalysed()] if args.only_unanalysed else []
    processed = 0
    chunks: AsyncIterator[Sequence[CommentText]]
    if args.comment_ids is not None:
        refs = [parse_ref(ref) for ref in args.comment_ids]
        async with sessionmaker() as reader:
            found = await comments_by_ref(reader, refs, where=new_only)
        total = len(found) if args.only_unanalysed else len(args.comment_ids)
        chunks = _in_chunks(found)
    else:
        conditions = [*comment_conditions(owner_id=-(args.group_id or 0)), *new_only]
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
    if args.only_unanalysed:
        result["only_unanalysed"] = True
    if "morphology" in args.operations:
        result["analyses_stored"] = processed
    if "keywords" in args.operations:
        keywords = await asyncio.to_thread(extractor.rank, tally, top_n=args.top_n)
        result["keywords"] = _keywords_result(keywords, documents=tally.documents, ranked=False)
    return result


async def _in_chunks(comments: Sequence[Comment]) -> AsyncIterator[Sequence[Comment]]:
    for start in range(0, len(comments), CHUNK):
        yield comments[start : start + CHUNK]
