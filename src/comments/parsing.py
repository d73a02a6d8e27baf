"""Fetch a community's posts and every comment on them from VK, and store them.

Requests are batched through `execute` (25 API calls each): first pages of 25 posts at once,
then the remaining pages of top-level comments, then the thread replies VK did not inline.
Each batch of posts is stored in its own transaction, so a crash or an abort leaves complete
posts behind; the ids of stored posts are remembered (in Redis, per job) so a re-run of the
same job continues where it stopped. Storage is an idempotent upsert: a new parse of the same
community stores each comment once and updates what changed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq.context import ProgressReporter
from src.comments import service
from src.comments.exceptions import CommunityNotFound
from src.vk.client import MAX_COUNT, Call, VKClient, comments_call, posts_call
from src.vk.exceptions import VKAccessDenied, VKError

logger = logging.getLogger(__name__)

DONE_TTL_SECONDS = 2 * 86_400


@dataclass
class ParseReport:
    """What a parse did; `as_result()` is the job's result."""

    group_id: int
    screen_name: str | None = None
    posts_total: int = 0
    posts_done: int = 0
    posts_resumed: int = 0
    posts_skipped: list[dict[str, Any]] = field(default_factory=list)
    comments_parsed: int = 0
    comments_inserted: int = 0
    comments_updated: int = 0
    comments_unchanged: int = 0

    def as_result(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id,
            "screen_name": self.screen_name,
            "posts_total": self.posts_total,
            "posts_done": self.posts_done,
            "posts_resumed": self.posts_resumed,
            "posts_skipped": self.posts_skipped,
            "comments_parsed": self.comments_parsed,
            "comments_saved": self.comments_inserted + self.comments_updated,
            "comments_inserted": self.comments_inserted,
            "comments_updated": self.comments_updated,
            "comments_unchanged": self.comments_unchanged,
        }


class CommunityParser:
    """One parse of one community; `run()` does the work."""

    def __init__(
        self,
        client: VKClient,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        redis: Redis,
        job_id: str,
        progress: ProgressReporter,
    ) -> None:
        self.client = client
        self.sessionmaker = sessionmaker
        self.redis = redis
        self.done_key = f"vkp:parse:done:{job_id}"
        self.progress = progress
        self.batch = client.settings.execute_batch
        # Requests in flight at once: VK's latency need not eat into the token's budget, which
        # the shared limiter enforces however many are in flight.
        self.concurrency = max(1, min(8, int(client.settings.requests_per_second)))

    async def run(
        self,
        *,
        group_id: int | None,
        screen_name: str | None,
        limit: int,
        post_ids: Sequence[int] | None,
        since: datetime | None,
    ) -> ParseReport:
        group = await self._community(group_id, screen_name)
        report = ParseReport(group_id=int(group["id"]), screen_name=group.get("screen_name"))
        owner_id = -report.group_id
        async with self.sessionmaker.begin() as session:
            await service.upsert_community(session, group=group)
        if post_ids:
            posts = [{"id": post_id} for post_id in dict.fromkeys(post_ids)]
        else:
            posts = await self._posts(owner_id, limit=limit, since=since)
            async with self.sessionmaker.begin() as session:
                await service.upsert_posts(session, owner_id=owner_id, posts=posts)
        report.posts_total = len(posts)
        done = {int(x) for x in await self.redis.smembers(self.done_key)}  # type: ignore[misc]
        todo = [post for post in posts if int(post["id"]) not in done]
        report.posts_resumed = len(posts) - len(todo)
        report.posts_done = report.posts_resumed
        await self.progress(0, f"{len(posts)} posts to read")
        for start in range(0, len(todo), self.batch):
            chunk = todo[start : start + self.batch]
            await self._parse_posts(owner_id, chunk, report)
            await self.progress(
                100 * report.posts_done / max(1, report.posts_total),
                f"post {report.posts_done} of {report.posts_total}",
            )
        async with self.sessionmaker.begin() as session:
            await service.mark_community_parsed(
                session, community_id=report.group_id, at=datetime.now(UTC)
            )
        await self.redis.delete(self.done_key)
        return report

    async def _community(self, group_id: int | None, screen_name: str | None) -> dict[str, Any]:
        if screen_name is not None:
            found = await self.client.resolve_screen_name(screen_name)
            if found is None or found.get("type") not in ("group", "page", "event"):
                raise CommunityNotFound(f"no VK community is called {screen_name!r}")
            group_id = int(found["object_id"])
        assert group_id is not None
        return await self.client.get_group(group_id)

    async def _posts(
        self, owner_id: int, *, limit: int, since: datetime | None
    ) -> list[dict[str, Any]]:
        first = await self.client.get_posts(owner_id, 0, min(MAX_COUNT, limit))
        wanted = min(limit, int(first.get("count", 0)))
        posts: list[dict[str, Any]] = list(first.get("items", []))
        calls = [
            posts_call(owner_id, offset, min(MAX_COUNT, wanted - offset))
            for offset in range(len(posts), wanted, MAX_COUNT)
        ]
        for page in await self.client.execute_calls(calls, concurrency=self.concurrency):
            if isinstance(page, VKError):
                raise page
            posts.extend(page.get("items", []))
        posts = posts[:limit]
        if since is not None:
            cutoff = since.timestamp()
            posts = [post for post in posts if int(post.get("date", 0)) >= cutoff]
        return posts

    async def _parse_posts(
        self, owner_id: int, posts: list[dict[str, Any]], report: ParseReport
    ) -> None:
        ids = [int(post["id"]) for post in posts]
        skipped: dict[int, VKError] = {}
        comments: dict[int, list[dict[str, Any]]] = {post_id: [] for post_id in ids}

        # Round 1: the first page of each post (it says how many top-level comments there are).
        first_pages = await self.client.execute_calls(
            [comments_call(owner_id, post_id) for post_id in ids], concurrency=self.concurrency
        )
        more: list[tuple[int, Call]] = []
        for post_id, page in zip(ids, first_pages, strict=True):
            if isinstance(page, VKError):
                skipped[post_id] = _skippable(page)
                continue
            comments[post_id].extend(page.get("items", []))
            top_level = int(page.get("current_level_count", page.get("count", 0)))
            more += [
                (post_id, comments_call(owner_id, post_id, offset))
                for offset in range(MAX_COUNT, top_level, MAX_COUNT)
            ]
        # Round 2: the remaining pages of top-level comments.
        await self._collect(more, comments, skipped)
        # Round 3: thread replies beyond those VK returned inline.
        threads: list[tuple[int, Call]] = []
        for post_id, items in comments.items():
            for comment in items:
                thread = comment.get("thread") or {}
                inline = len(thread.get("items") or [])
                total = int(thread.get("count", 0))
                if total > inline:
                    threads += [
                        (
                            post_id,
                            comments_call(owner_id, post_id, offset, comment_id=comment["id"]),
                        )
                        for offset in range(0, total, MAX_COUNT)
                    ]
        replies: dict[int, list[dict[str, Any]]] = {post_id: [] for post_id in ids}
        await self._collect(threads, replies, skipped)

        async with self.sessionmaker.begin() as session:
            for post_id in ids:
                if post_id in skipped:
                    error = skipped[post_id]
                    await service.mark_post_skipped(
                        session,
                        owner_id=owner_id,
                        post_id=post_id,
                        code=error.code or 0,
                        reason=error.vk_message,
                    )
                    report.posts_skipped.append(
                        {"post_id": post_id, "code": error.code, "reason": error.vk_message}
                    )
                    continue
                stored = comments[post_id] + replies[post_id]
                counts = await service.upsert_comments(
                    session, owner_id=owner_id, post_id=post_id, comments=stored
                )
                report.comments_parsed += counts.total
                report.comments_inserted += counts.inserted
                report.comments_updated += counts.updated
                report.comments_unchanged += counts.unchanged
        await self.redis.sadd(self.done_key, *ids)  # type: ignore[misc]
        await self.redis.expire(self.done_key, DONE_TTL_SECONDS)
        report.posts_done += len(ids)

    async def _collect(
        self,
        calls: list[tuple[int, Call]],
        into: dict[int, list[dict[str, Any]]],
        skipped: dict[int, VKError],
    ) -> None:
        wanted = [(post_id, call) for post_id, call in calls if post_id not in skipped]
        if not wanted:
            return
        pages = await self.client.execute_calls(
            [call for _, call in wanted], concurrency=self.concurrency
        )
        for (post_id, _), page in zip(wanted, pages, strict=True):
            if isinstance(page, VKError):
                skipped[post_id] = _skippable(page)
            elif post_id not in skipped:
                into[post_id].extend(page.get("items", []))


def _skippable(error: VKError) -> VKError:
    """A per-post error that only means "skip this post"; anything else ends the parse."""
    if isinstance(error, VKAccessDenied):
        return error
    raise error
