"""`generate_report` without a community: a report over every stored community."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.database import create_engine, create_sessionmaker
from src.morphology.analyzer import MorphAnalyzer
from src.reports.collect import collect_report
from src.reports.render_csv import render_csv
from src.reports.render_html import render_html
from tests.arq.helpers import wait_for
from tests.conftest import headers, migrate
from tests.reports.test_reports import DOWNLOAD, REPORT, download, generate, populate

# The seeded data (`populate`): community 5 (stored) and comments on community 7's wall.
TOTALS = {
    "comments": 9,
    "deleted": 1,
    "authors": 5,  # 10 commented on both walls: one author
    "posts": 4,  # post 1 of each wall counts apart
    "days": 5,
    "active_days": 3,
    "analysed": 3,
}
DAYS = [
    {"date": "2026-03-01", "comments": 4, "deleted": 1},
    {"date": "2026-03-02", "comments": 0, "deleted": 0},
    {"date": "2026-03-03", "comments": 4, "deleted": 0},
    {"date": "2026-03-04", "comments": 0, "deleted": 0},
    {"date": "2026-03-05", "comments": 1, "deleted": 0},
]
AUTHORS = [(10, 5, 0), (-5, 1, 0), (11, 1, 1), (12, 1, 0), (20, 1, 0)]
# (wall, post, comments): a tie goes to the lower post id, then the lower community id.
POSTS = [(-5, 1, 4), (-7, 1, 2), (-5, 3, 2), (-5, 2, 1)]
KEYWORDS = [("парк", 4, 1), ("вода", 3, 2), ("горячий", 1, 1), ("отключить", 1, 1)]


def check(document: dict[str, Any]) -> None:
    assert document["scope"] == "all communities"
    assert (document["group_id"], document["community"]) == (None, None)
    assert (document["community_found"], document["communities"]) == (True, 1)
    assert document["totals"] == TOTALS
    assert document["days"] == DAYS
    assert [(a["from_id"], a["comments"], a["deleted"]) for a in document["top_authors"]] == (
        AUTHORS
    )
    posts = document["top_posts"]
    assert [(p["owner_id"], p["post_id"], p["comments"]) for p in posts] == POSTS
    assert [p["url"] for p in posts[:2]] == ["https://vk.com/wall-5_1", "https://vk.com/wall-7_1"]
    keywords = [(k["term"], k["count"], k["comments"]) for k in document["keywords"]]
    assert keywords == KEYWORDS
    assert document["notes"] == []


async def seed(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with sessionmaker.begin() as session:
        await session.execute(
            text("TRUNCATE comments, posts, communities, comment_analyses, reports")
        )
        await populate(session)


async def test_a_report_without_group_id_covers_every_community(
    client: httpx.AsyncClient, worker: Any, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessionmaker)
    accepted = await client.post(REPORT, headers=headers("alice"))
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["data"]["params"] == {"format": "json", "top_n": 20}
    done = await wait_for(client, accepted.json()["data"]["job_id"], owner="alice")
    assert done["status"] == "complete", done
    result = done["result"]
    assert (result["group_id"], result["community_found"]) == (None, True)
    assert result["totals"] == TOTALS
    response = await download(client, result["report_id"])
    assert response.status_code == 200, response.text
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="comments-report-all-')
    check(response.json())

    page = (await download(client, (await generate(client, format="html"))["report_id"])).text
    assert "<title>Comments report: all communities</title>" in page
    assert "Communities: all communities (1 stored)." in page
    assert 'href="https://vk.com/wall-7_1"' in page and ">-7_1</a>" in page

    # Listed with no community; a community's listing leaves it out.
    listed = (await client.get(DOWNLOAD, headers=headers("alice"))).json()
    assert [item["group_id"] for item in listed["items"]] == [None, None]
    only_5 = await client.get(DOWNLOAD, params={"group_id": 5}, headers=headers("alice"))
    assert only_5.json()["total"] == 0


async def test_with_no_community_stored_the_report_says_so(
    client: httpx.AsyncClient, worker: Any, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with sessionmaker.begin() as session:
        await session.execute(
            text("TRUNCATE comments, posts, communities, comment_analyses, reports")
        )
    result = await generate(client, format="csv")
    assert result["community_found"] is False
    assert result["totals"] == dict.fromkeys(TOTALS, 0)
    assert any("no community is stored" in note for note in result["notes"])


async def check_domain(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with sessionmaker() as session:
        data = await collect_report(session, group_id=None, analyzer=MorphAnalyzer())
    check(data.to_document())
    rows = list(csv.reader(io.StringIO(render_csv(data), newline="")))
    assert ["group_id", "all communities"] in rows
    header = ["rank", "post_id", "comments", "date", "url", "text", "owner_id"]
    second = rows[rows.index(header) + 2]
    assert (second[:3], second[4], second[6]) == (["2", "1", "2"], "https://vk.com/wall-7_1", "-7")
    assert "Comments report: all communities" in render_html(data)


async def test_domain_on_postgresql(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    await seed(sessionmaker)
    await check_domain(sessionmaker)


async def test_domain_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'reports.db'}"
    await asyncio.to_thread(migrate, url)  # alembic runs its own event loop
    engine = create_engine(url)
    try:
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker.begin() as session:
            await populate(session)
        await check_domain(sessionmaker)
    finally:
        await engine.dispose()
