"""`parse_vk_comments` end to end: the endpoint, a real worker, the fake VK API, PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.comments.models import Comment, Post
from src.config import Settings
from tests.arq.helpers import API, status, wait_for
from tests.arq.test_worker_process import ARQ, worker_env
from tests.conftest import WorkerHandle, headers
from tests.vk.fake_server import TOKEN, Error, FakeVK, Hold, Sleep, community_with_posts

PARSE = "/api/v1/comments/parse/vk/async"


@pytest.fixture(autouse=True)
async def empty_tables(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with sessionmaker.begin() as session:
        await session.execute(text("TRUNCATE comments, posts, communities"))


async def parse(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.post(PARSE, params=params, headers=headers("alice"))
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def count(sessionmaker: async_sessionmaker[AsyncSession], model: Any, **where: Any) -> int:
    async with sessionmaker() as session:
        statement = select(func.count()).select_from(model).filter_by(**where)
        return int(await session.scalar(statement) or 0)


async def test_parse_stores_every_comment_with_threads_and_paging(
    client: httpx.AsyncClient,
    fake_vk: FakeVK,
    worker_handle: WorkerHandle,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    community = fake_vk.add(
        community_with_posts(3, 130, 12, community_id=7, screen_name="testclub", deleted_every=9)
    )
    expected = sum(post.comment_count() for post in community.posts)
    await worker_handle.start()
    body = await parse(client, screen_name="testclub", limit=100)
    assert body["success"] is True
    assert body["data"]["function"] == "parse_vk_comments"
    assert body["data"]["status_url"] == f"{API}/status/{body['data']['job_id']}"
    done = await wait_for(client, body["data"]["job_id"], timeout=60)
    assert done["status"] == "complete", done
    result = done["result"]
    assert result["group_id"] == 7
    assert result["posts_total"] == 3 and result["posts_done"] == 3
    assert result["posts_skipped"] == []
    assert result["comments_parsed"] == expected
    assert result["comments_saved"] == expected
    assert await count(sessionmaker, Comment, owner_id=-7) == expected
    assert await count(sessionmaker, Post, owner_id=-7) == 3
    assert await count(sessionmaker, Comment, owner_id=-7, is_deleted=True) > 0
    replies = await count(sessionmaker, Comment, owner_id=-7, post_id=1) - 130
    assert replies == 130 * 12  # more than the 10 VK inlines per thread
    # Batched through execute: 3 + 3 + 390 comment calls (first pages, second pages, threads)
    # in 1 + 1 + 16 requests, plus 3 for the community and its wall.
    assert len(fake_vk.requests) == 21

    listing = await client.get(
        "/api/v1/comments",
        params={"group_id": 7, "post_id": 2, "limit": 5},
        headers=headers("bob"),
    )
    assert listing.status_code == 200
    page = listing.json()
    assert page["total"] == 130 * 13
    assert len(page["items"]) == 5
    first = page["items"][0]
    one = await client.get(
        f"/api/v1/comments/{first['owner_id']}_{first['comment_id']}", headers=headers("bob")
    )
    assert one.json() == first


async def test_reparse_stores_nothing_twice_and_updates_changes(
    client: httpx.AsyncClient,
    fake_vk: FakeVK,
    worker_handle: WorkerHandle,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    community = fake_vk.add(community_with_posts(2, 40, 3, community_id=8))
    expected = sum(post.comment_count() for post in community.posts)
    await worker_handle.start()
    first = await wait_for(client, (await parse(client, group_id=8))["data"]["job_id"])
    assert first["result"]["comments_saved"] == expected
    community.posts[0].comments[0].likes += 5  # a change on VK
    again = await wait_for(client, (await parse(client, group_id=8))["data"]["job_id"])
    assert again["result"]["comments_inserted"] == 0
    assert again["result"]["comments_updated"] == 1
    assert again["result"]["comments_unchanged"] == expected - 1
    assert await count(sessionmaker, Comment, owner_id=-8) == expected


async def test_closed_post_is_skipped_with_its_reason(
    client: httpx.AsyncClient, fake_vk: FakeVK, worker_handle: WorkerHandle
) -> None:
    fake_vk.add(community_with_posts(3, 5, 0, community_id=9))
    fake_vk.fail("wall.getComments", Error(212, "Access to post comments denied"), post_id=2)
    await worker_handle.start()
    done = await wait_for(client, (await parse(client, group_id=9))["data"]["job_id"])
    assert done["status"] == "complete"
    assert done["result"]["posts_skipped"] == [
        {"post_id": 2, "code": 212, "reason": "Access to post comments denied"}
    ]
    assert done["result"]["comments_parsed"] == 10


async def test_bad_token_fails_the_job_clearly_without_leaking_it(
    client: httpx.AsyncClient,
    fake_vk: FakeVK,
    worker_handle: WorkerHandle,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_vk.add(community_with_posts(1, 1, 0, community_id=10))
    monkeypatch.setenv("VK_TOKEN", "wrong-token-value-123")
    caplog.set_level(logging.DEBUG)
    await worker_handle.start()
    done = await wait_for(client, (await parse(client, group_id=10))["data"]["job_id"])
    assert done["status"] == "failed"
    assert done["error"]["type"] == "VKAuthError"
    assert "VK_TOKEN" in done["error"]["message"]
    assert "wrong-token-value-123" not in caplog.text
    assert "wrong-token-value-123" not in str(done)
    assert TOKEN not in caplog.text


async def test_unknown_screen_name_fails_the_job(
    client: httpx.AsyncClient, fake_vk: FakeVK, worker_handle: WorkerHandle
) -> None:
    await worker_handle.start()
    done = await wait_for(client, (await parse(client, screen_name="nosuchclub"))["data"]["job_id"])
    assert done["status"] == "failed"
    assert done["error"] == {
        "type": "CommunityNotFound",
        "message": "no VK community is called 'nosuchclub'",
    }


async def test_parse_endpoint_validates_input(client: httpx.AsyncClient) -> None:
    for params in (
        {},
        {"group_id": 1, "screen_name": "x1"},
        {"group_id": -5},
        {"limit": 0},
        {"screen_name": "bad name!"},
    ):
        response = await client.post(PARSE, params=params, headers=headers("alice"))
        assert response.status_code == 422, (params, response.text)
    assert (await client.post(PARSE, params={"group_id": 1})).status_code == 401
    missing = await client.get("/api/v1/comments/-1_999", headers=headers("alice"))
    assert missing.status_code == 404
    bad = await client.get("/api/v1/comments/abc", headers=headers("alice"))
    assert bad.status_code == 422


async def test_abort_mid_parse_leaves_whole_posts_and_a_rerun_completes(
    client: httpx.AsyncClient,
    fake_vk: FakeVK,
    worker_handle: WorkerHandle,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    fake_vk.add(community_with_posts(60, 3, 0, community_id=11))
    # The first batch of 25 posts goes through; VK then holds the second until released.
    held = Hold()
    fake_vk.fail("execute", Sleep(0), held)
    await worker_handle.start()
    job_id = (await parse(client, group_id=11))["data"]["job_id"]
    await asyncio.wait_for(held.reached.wait(), 30)
    # The job is mid-parse: one batch stored and reported, the next one in flight.
    current = await status(client, job_id)
    assert (current["status"], current["message"]) == ("in_progress", "post 25 of 60"), current
    aborted = await client.delete(f"{API}/abort/{job_id}", headers=headers("alice"))
    assert aborted.json()["status"] == "aborted"
    held.release()
    stored = await count(sessionmaker, Comment, owner_id=-11)
    assert stored == 75  # whole posts only: the first batch of 25 posts, 3 comments each
    rerun = await wait_for(client, (await parse(client, group_id=11))["data"]["job_id"], timeout=30)
    assert rerun["status"] == "complete"
    assert rerun["result"]["comments_inserted"] == 180 - stored
    assert await count(sessionmaker, Comment, owner_id=-11) == 180


async def test_job_retried_after_vk_trouble_continues_where_it_stopped(
    client: httpx.AsyncClient,
    fake_vk: FakeVK,
    worker_handle: WorkerHandle,
    sessionmaker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """VK keeps failing mid-parse: the job retries and does not fetch stored posts again."""
    monkeypatch.setenv("VK_MAX_RETRIES", "2")
    fake_vk.add(community_with_posts(30, 2, 0, community_id=12))
    # The second batch of posts hits "too many requests" until the client's retries give up.
    fake_vk.fail("execute", Sleep(0), *[6] * 4)
    await worker_handle.start()
    done = await wait_for(client, (await parse(client, group_id=12))["data"]["job_id"], timeout=60)
    assert done["status"] == "complete", done
    assert done["tries"] == 2
    assert done["result"]["posts_resumed"] == 25
    assert done["result"]["posts_done"] == 30
    assert await count(sessionmaker, Comment, owner_id=-12) == 60


async def test_two_worker_processes_share_one_request_budget(
    client: httpx.AsyncClient, fake_vk: FakeVK, settings: Settings, tmp_path: Path
) -> None:
    fake_vk.add(community_with_posts(100, 1, 0, community_id=21))
    fake_vk.add(community_with_posts(100, 1, 0, community_id=22))
    env = {
        **worker_env(settings),
        "VK_TOKEN": TOKEN,
        "VK_API_URL": fake_vk.url,
        "VK_REQUESTS_PER_SECOND": "3",
        # The fake stamps a request when this (busy) test process gets to it: 3 per 2 s (the
        # widest window) leaves a second of that jitter before it could look like a fourth
        # request within 1 s. Unshared budgets would show 6.
        "VK_RATE_WINDOW_SLACK": "1.0",
    }
    workers = [
        subprocess.Popen(
            [ARQ, "tests.worker_settings.WorkerSettings"],
            cwd=tmp_path,  # not ROOT: a developer's ./.env must not reach the workers
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        jobs = [(await parse(client, group_id=group))["data"]["job_id"] for group in (21, 22)]
        # Poll gently: the fake server shares this event loop and stamps requests when it
        # handles them, so a busy loop would bunch its timestamps together.
        for _ in range(120):
            await asyncio.sleep(0.5)
            results = [await status(client, job_id) for job_id in jobs]
            if all(r["status"] in ("complete", "failed", "aborted") for r in results):
                break
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(20)
    assert [r["status"] for r in results] == ["complete", "complete"]
    assert len(fake_vk.requests) >= 12
    assert fake_vk.max_per_second() <= 3
    assert not [r for r in fake_vk.requests if r.error == 6]
