"""Tasks of the comments pipeline: `parse_vk_comments`."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, Field, field_validator, model_validator

from src.arq.context import JobContext
from src.arq.exceptions import RetryLater
from src.arq.registry import registry
from src.comments.exceptions import VKNotConfigured
from src.comments.parsing import CommunityParser
from src.config import load
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
