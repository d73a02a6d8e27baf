"""The reports page: the viewer's reports, their downloads (yours only), a new one queued."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.comments import service
from src.maintenance.statistics import update_statistics
from tests.arq.helpers import wait_for
from tests.conftest import headers
from tests.dashboard.conftest import Clients
from tests.dashboard.helpers import DASHBOARD, post, signed_in

REST_DOWNLOAD = "/api/v1/comments/reports"
MISSING = "0123456789abcdef0123456789abcdef"


def comment(comment_id: int, from_id: int, day: int, **extra: Any) -> dict[str, Any]:
    when = int(datetime(2026, 3, day, 9, tzinfo=UTC).timestamp())
    return {"id": comment_id, "from_id": from_id, "date": when, "text": "вода", **extra}


@pytest.fixture
async def stored(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Community 5 with 3 comments (1 deleted), community 7 with 1; their statistics."""
    async with sessionmaker.begin() as session:
        await session.execute(
            text(
                "TRUNCATE comments, posts, communities, comment_analyses, reports, community_stats"
            )
        )
        await service.upsert_community(
            session, group={"id": 5, "screen_name": "water", "name": "Water"}
        )
        await service.upsert_community(
            session, group={"id": 7, "screen_name": "park", "name": "Park"}
        )
        await service.upsert_posts(
            session, owner_id=-5, posts=[{"id": 1, "date": comment(0, 0, 1)["date"], "text": "p"}]
        )
        await service.upsert_comments(
            session,
            owner_id=-5,
            post_id=1,
            comments=[comment(1, 10, 1), comment(2, 11, 2), comment(3, 10, 3, deleted=True)],
        )
        await service.upsert_comments(session, owner_id=-7, post_id=1, comments=[comment(1, 20, 1)])
        await update_statistics(session)


async def generate(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, owner: str, csrf: str, **form: str
) -> str:
    """Queue a report through the page's form and wait for its job; the report's id."""
    response = await post(browser, "/reports", csrf, **form)
    assert response.status_code == 303, response.text
    job_id = response.headers["location"].removeprefix(f"{DASHBOARD}/jobs/")
    done = await wait_for(client, job_id, owner=owner)
    assert done["status"] == "complete", done
    return job_id


async def test_a_report_is_listed_and_downloaded_by_its_owner_only(
    stored: None, worker: Worker, browsers: Clients, client: httpx.AsyncClient
) -> None:
    async with browsers() as alice:
        csrf = await signed_in(alice, "alice")
        form = await alice.get(f"{DASHBOARD}/reports")
        assert form.status_code == 200
        assert '<option value="5">Water (5)</option>' in form.text  # the stored communities
        assert "No reports yet of yours" in form.text
        report_id = await generate(alice, client, "alice", csrf, group_id="5", format="csv")
        page = await alice.get(f"{DASHBOARD}/reports")
        start = page.text.index(f'data-report="{report_id}"')
        row = page.text[start : page.text.index("</tr>", start)]
        assert "Water" in row and "<td>csv</td>" in row and "<td>3</td>" in row  # 3 comments
        assert f'href="/dashboard/reports/{report_id}"' in row
        download = await alice.get(f"{DASHBOARD}/reports/{report_id}")
    assert download.status_code == 200
    rest = await client.get(f"{REST_DOWNLOAD}/{report_id}", headers=headers("alice"))
    assert download.content == rest.content and download.content  # the stored file
    for name in ("content-type", "content-disposition", "content-security-policy"):
        assert download.headers[name] == rest.headers[name], name
    assert download.headers["content-type"].startswith("text/csv")
    assert download.headers["content-disposition"].startswith("attachment;")
    assert download.headers["x-content-type-options"] == "nosniff"

    async with browsers() as bob:
        await signed_in(bob, "bob")
        theirs = await bob.get(f"{DASHBOARD}/reports/{report_id}")
        missing = await bob.get(f"{DASHBOARD}/reports/{MISSING}")
        assert theirs.status_code == missing.status_code == 404
        assert theirs.text == missing.text  # nothing tells them apart
        assert report_id not in (await bob.get(f"{DASHBOARD}/reports")).text
        assert (await bob.get(f"{DASHBOARD}/reports/not-an-id")).status_code == 404

    async with browsers() as root:
        await signed_in(root, "root")
        assert report_id in (await root.get(f"{DASHBOARD}/reports")).text  # everyone's
        assert (await root.get(f"{DASHBOARD}/reports/{report_id}")).content == rest.content


async def test_a_report_of_all_communities(
    stored: None, worker: Worker, browsers: Clients, client: httpx.AsyncClient
) -> None:
    async with browsers() as bob:
        csrf = await signed_in(bob, "bob")
        report_id = await generate(bob, client, "bob", csrf, group_id="", format="json")
        page = await bob.get(f"{DASHBOARD}/reports")
        start = page.text.index(f'data-report="{report_id}"')
        assert "all communities" in page.text[start : page.text.index("</tr>", start)]
        download = await bob.get(f"{DASHBOARD}/reports/{report_id}")
    assert download.status_code == 200
    document = json.loads(download.content)
    assert document["group_id"] is None
    assert document["totals"]["comments"] == 4  # both communities


async def test_the_form_needs_the_sessions_token_and_known_choices(
    stored: None, browsers: Clients, client: httpx.AsyncClient
) -> None:
    async with browsers() as browser:
        csrf = await signed_in(browser, "alice")
        assert (await post(browser, "/reports", None, group_id="5")).status_code == 403
        assert (await post(browser, "/reports", "forged", group_id="5")).status_code == 403
        for form in ({"group_id": "five"}, {"group_id": "0"}, {"format": "pdf"}):
            refused = await post(browser, "/reports", csrf, **form)
            assert refused.status_code == 303
            assert refused.headers["location"] == f"{DASHBOARD}/reports?notice=report-refused"
        page = await browser.get(refused.headers["location"])
        assert "The report was not queued" in page.text
    listing = await client.get("/api/v1/arq/jobs", headers=headers("root"))
    assert listing.json()["total"] == 0  # nothing was queued


def _row(page: str, report_id: str) -> str:
    """The table row of `report_id` on a reports page."""
    start = page.index(f'data-report="{report_id}"')
    return page[start : page.index("</tr>", start)]


async def test_an_admin_sees_each_reports_owner_and_filters_by_owner(
    stored: None, worker: Worker, browsers: Clients, client: httpx.AsyncClient
) -> None:
    async with browsers() as alice:
        alices = await generate(
            alice, client, "alice", await signed_in(alice, "alice"), group_id="5"
        )
    async with browsers() as bob:
        bobs = await generate(bob, client, "bob", await signed_in(bob, "bob"), group_id="7")

    async with browsers() as root:
        await signed_in(root, "root")
        everyone = (await root.get(f"{DASHBOARD}/reports")).text
        assert '<th scope="col">Owner</th>' in everyone
        assert "<td>alice</td>" in _row(everyone, alices)
        assert "<td>bob</td>" in _row(everyone, bobs)
        only_bob = await root.get(f"{DASHBOARD}/reports", params={"owner": "bob"})
        assert only_bob.status_code == 200
        assert bobs in only_bob.text and alices not in only_bob.text
        assert 'name="owner" value="bob"' in only_bob.text  # the filter stays filled in
        nobody = (await root.get(f"{DASHBOARD}/reports", params={"owner": "carol"})).text
        assert "No reports of this owner." in nobody and alices not in nobody
        too_long = await root.get(f"{DASHBOARD}/reports", params={"owner": "x" * 101})
        assert too_long.status_code == 400

    async with browsers() as alice:
        await signed_in(alice, "alice")
        # A user's owner filter is ignored, and they get no owner column: their own reports.
        asked = (await alice.get(f"{DASHBOARD}/reports", params={"owner": "bob"})).text
        assert alices in asked and bobs not in asked
        assert '<th scope="col">Owner</th>' not in asked and 'name="owner"' not in asked
