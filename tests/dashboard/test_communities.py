"""The communities page: stored statistics for every viewer, and "parse now" as the viewer's job."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.comments import service
from src.maintenance.statistics import update_statistics
from tests.conftest import headers
from tests.dashboard.conftest import Clients
from tests.dashboard.helpers import DASHBOARD, post, signed_in

NAME = "<b>Hot</b> water & Co"
BASE = 1_700_000_000
PARSED_AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def comment(comment_id: int, from_id: int, offset: int, **extra: Any) -> dict[str, Any]:
    return {"id": comment_id, "from_id": from_id, "date": BASE + offset, "text": "c", **extra}


@pytest.fixture
async def stored(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Community 5 (2 posts, 3 comments of 2 authors, 1 deleted) and 7 (nothing), with their
    statistics computed as the statistics job does."""
    async with sessionmaker.begin() as session:
        await session.execute(
            text("TRUNCATE comments, posts, communities, comment_analyses, community_stats")
        )
        await service.upsert_community(
            session, group={"id": 5, "screen_name": "water", "name": NAME}
        )
        await service.upsert_community(
            session, group={"id": 7, "screen_name": "park", "name": "Park"}
        )
        await service.mark_community_parsed(session, community_id=5, at=PARSED_AT)
        posts = [{"id": post_id, "date": BASE, "text": "post"} for post_id in (1, 2)]
        await service.upsert_posts(session, owner_id=-5, posts=posts)
        await service.upsert_comments(
            session,
            owner_id=-5,
            post_id=1,
            comments=[comment(1, 10, 0), comment(2, 11, 10), comment(3, 10, 20, deleted=True)],
        )
        await update_statistics(session)


def row_of(page: str, community_id: int) -> str:
    start = page.index(f'data-community="{community_id}"')
    return page[start : page.index("</tr>", start)]


async def test_every_viewer_sees_the_stored_statistics(stored: None, browsers: Clients) -> None:
    for owner in ("alice", "bob"):
        async with browsers() as browser:
            await signed_in(browser, owner)
            page = await browser.get(f"{DASHBOARD}/communities")
            assert page.status_code == 200
            assert 'href="/dashboard/communities" aria-current="page"' in page.text
            water = row_of(page.text, 5)
            cells = [html.unescape(cell.split("</td>")[0]) for cell in water.split("<td>")[1:]]
            assert cells[0] == f'{NAME} <span class="muted">water</span>'  # the name, as text
            assert cells[1:7] == ["5", "2", "3", "1", "2", "0"]
            assert cells[9] == "2026-11-20 12:00:00 UTC"  # last parsed
            assert "&lt;b&gt;Hot&lt;/b&gt; water &amp; Co" in water  # escaped, not markup
            park = row_of(page.text, 7)
            assert "Park" in park and "<td>—</td>" in park


async def test_parse_now_queues_a_job_of_the_viewer(
    stored: None, browsers: Clients, client: httpx.AsyncClient
) -> None:
    async with browsers() as browser:
        csrf = await signed_in(browser, "alice")
        response = await post(browser, "/communities/5/parse", csrf, limit="25")
        assert response.status_code == 303
        location = response.headers["location"]
        assert location.startswith(f"{DASHBOARD}/jobs/")
        job_id = location.removeprefix(f"{DASHBOARD}/jobs/")
        job_page = await browser.get(location)
        assert job_page.status_code == 200
        assert '"group_id": 5' in html.unescape(job_page.text)
        assert '"limit": 25' in html.unescape(job_page.text)
    listing = await client.get(
        "/api/v1/arq/jobs", params={"function": "parse_vk_comments"}, headers=headers("root")
    )
    assert [(job["job_id"], job["owner"]) for job in listing.json()["items"]] == [(job_id, "alice")]
    # The job is alice's: bob's API does not show it.
    other = await client.get(f"/api/v1/arq/status/{job_id}", headers=headers("bob"))
    assert other.status_code == 404


async def test_parse_now_needs_the_sessions_token_and_a_valid_limit(
    stored: None, browsers: Clients, client: httpx.AsyncClient
) -> None:
    async with browsers() as browser:
        csrf = await signed_in(browser, "alice")
        assert (await post(browser, "/communities/5/parse", None)).status_code == 403
        assert (await post(browser, "/communities/5/parse", "forged")).status_code == 403
        for limit in ("0", "many", "10001"):
            refused = await post(browser, "/communities/5/parse", csrf, limit=limit)
            assert refused.status_code == 303
            assert refused.headers["location"] == f"{DASHBOARD}/communities?notice=parse-refused"
        page = await browser.get(refused.headers["location"])
        assert "The parse job was not queued" in page.text
        assert (await post(browser, "/communities/0/parse", csrf)).status_code == 404
    listing = await client.get("/api/v1/arq/jobs", headers=headers("root"))
    assert listing.json()["total"] == 0  # nothing was queued


async def test_without_statistics_the_page_says_so(
    sessionmaker: async_sessionmaker[AsyncSession], browsers: Clients
) -> None:
    async with sessionmaker.begin() as session:
        await session.execute(text("TRUNCATE community_stats"))
    async with browsers() as browser:
        await signed_in(browser, "bob")
        page = await browser.get(f"{DASHBOARD}/communities")
        assert page.status_code == 200
        assert "No community statistics yet" in page.text
