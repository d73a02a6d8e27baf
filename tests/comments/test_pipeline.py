"""The whole pipeline as a user drives it: parse (with a completion webhook), analyse,
statistics, a report; each step's numbers agree with what the fake VK API served."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.arq.helpers import enqueue, wait_for
from tests.conftest import headers
from tests.vk.fake_server import FakeVK, community_with_posts
from tests.webhooks.test_notifications import Receiver, receiver  # noqa: F401 (fixture)

GROUP = 9
TEXTS = ("Горячую воду опять отключили", "В парке поставили новые скамейки", "Воду дали, спасибо")


@pytest.fixture(autouse=True)
async def empty_tables(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with sessionmaker.begin() as session:
        await session.execute(
            text("TRUNCATE comments, posts, communities, comment_analyses, community_stats")
        )


def sections(content: str) -> dict[str, list[list[str]]]:
    """A sectioned report CSV: {section: its rows after the header}."""
    found: dict[str, list[list[str]]] = {}
    rows = list(csv.reader(io.StringIO(content)))
    index = 0
    while index < len(rows):
        if rows[index]:
            name, end = rows[index][0], index + 2
            while end < len(rows) and rows[end]:
                end += 1
            found[name] = rows[index + 2 : end]
            index = end
        index += 1
    return found


async def test_parse_analyse_statistics_report(
    client: httpx.AsyncClient,
    fake_vk: FakeVK,
    receiver: Receiver,  # noqa: F811
    worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_ALLOW_HOSTS", "127.0.0.1/32")
    community = fake_vk.add(
        community_with_posts(
            2, 30, 2, community_id=GROUP, screen_name="pipeline", name="Двор", deleted_every=10
        )
    )
    served = [c for post in community.posts for top in post.comments for c in (top, *top.replies)]
    for index, comment in enumerate(served):
        comment.text = TEXTS[index % len(TEXTS)]
    deleted = sum(comment.deleted for comment in served)
    # VK serves a deleted comment without its author.
    authors = len({comment.from_id for comment in served if not comment.deleted})

    # 1. Parse, asking for a webhook when it ends.
    parsed = await client.post(
        "/api/v1/comments/parse/vk/async",
        params={"group_id": GROUP},
        headers={**headers("alice"), "X-Notify-Url": receiver.url},
    )
    assert parsed.status_code == 202, parsed.text
    parse_id = parsed.json()["data"]["job_id"]
    done = await wait_for(client, parse_id, timeout=30)
    assert done["result"]["comments_saved"] == len(served) == 180
    for _ in range(500):
        if receiver.requests:
            break
        await asyncio.sleep(0.02)
    hook = json.loads(receiver.requests[0].body)
    assert (hook["job_id"], hook["status"]) == (parse_id, "complete")
    assert hook["result"]["comments_saved"] == len(served)

    # 2. Morphology of every stored comment.
    batch = await enqueue(
        client,
        "process_batch_comments",
        kwargs={"group_id": GROUP, "operations": ["morphology"]},
    )
    analysed = await wait_for(client, batch.json()["job_id"], timeout=30)
    assert analysed["status"] == "complete", analysed

    # 3. Statistics (admin) and the endpoint anyone may read.
    stats_job = await enqueue(client, "update_statistics", owner="root")
    assert (await wait_for(client, stats_job.json()["job_id"], owner="root"))["status"] == (
        "complete"
    )
    (row,) = (await client.get("/api/v1/comments/stats", headers=headers("bob"))).json()
    assert row["community_id"] == GROUP
    assert (row["posts"], row["comments"], row["deleted_comments"]) == (2, 180, deleted)
    assert row["authors"] == authors
    assert row["analysed_comments"] > 0
    assert row["jobs_by_status"] == {"complete": 1}
    assert row["last_parsed_at"] is not None

    # 4. A CSV report agrees with all of it.
    queued = await client.post(
        "/api/v1/comments/report/async",
        params={"group_id": GROUP, "format": "csv", "top_n": 5},
        headers=headers("alice"),
    )
    report_job = await wait_for(client, queued.json()["data"]["job_id"])
    assert report_job["status"] == "complete", report_job
    download = await client.get(report_job["result"]["download_url"], headers=headers("alice"))
    assert download.status_code == 200
    report = sections(download.text)
    summary = dict((field, value) for field, value in report["summary"])
    assert (summary["comments"], summary["deleted"], summary["authors"], summary["posts"]) == (
        "180",
        str(deleted),
        str(authors),
        "2",
    )
    assert summary["name"] == "Двор"
    assert sum(int(comments) for _, comments, _ in report["days"]) == 180
    assert sorted(int(post[1]) for post in report["top_posts"]) == [1, 2]
    keywords = [term for _, term, _, _ in report["keywords"]]
    assert keywords[0] == "вода"  # in two of the three texts
