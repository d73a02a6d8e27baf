"""`generate_report`: the endpoints, a real worker, the three formats, ownership, SQLite."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq.models import JobRecord
from src.auth.schemas import Principal, Role
from src.comments import service
from src.comments.models import CommentAnalysis
from src.database import create_engine, create_sessionmaker
from src.morphology.analyzer import MorphAnalyzer
from src.reports import collect
from src.reports.chart import render_chart
from src.reports.collect import collect_report
from src.reports.data import DayCount
from src.reports.exceptions import ReportNotFound
from src.reports.models import Report
from src.reports.render_csv import render_csv
from src.reports.schemas import ReportFormat
from src.reports.service import generate_report
from src.reports.storage import get_report
from tests.arq.helpers import enqueue, wait_for
from tests.conftest import WorkerHandle, headers, migrate

REPORT = "/api/v1/comments/report/async"
DOWNLOAD = "/api/v1/comments/reports"
NAME = '<script>alert("name")</script> & Co'
POST_TEXT = "Горячая вода <img src=x onerror=alert(1)>"
FORMULA_TEXT = '=HYPERLINK("http://evil.example")'
PERIOD = {"since": "2026-03-03T03:00:00+03:00", "until": "2026-03-05T00:00:00Z"}


def at(day: int, hour: int = 9, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC)


def comment(comment_id: int, from_id: int, when: datetime, **extra: Any) -> dict[str, Any]:
    raw = {"id": comment_id, "from_id": from_id, "date": int(when.timestamp()), "text": "text"}
    return {**raw, **extra}


def analysis(owner_id: int, comment_id: int, lemma_counts: dict[str, int]) -> dict[str, Any]:
    return {
        "owner_id": owner_id,
        "comment_id": comment_id,
        "text_hash": "0" * 64,
        "word_count": sum(lemma_counts.values()),
        "has_cyrillic": True,
        "lemma_counts": lemma_counts,
        "pos_counts": {},
        "details": {},
        "analyzed_at": datetime.now(UTC),
    }


async def populate(session: AsyncSession) -> None:
    """Community 5: 7 comments (one deleted) on 3 posts over 2026-03-01..05, 2 analysed;
    community 7 has comments and analyses on the same days that must not count."""
    await service.upsert_community(session, group={"id": 5, "screen_name": "water", "name": NAME})
    await service.upsert_posts(
        session,
        owner_id=-5,
        posts=[
            {
                "id": 1,
                "date": int(datetime(2026, 2, 28, 12, tzinfo=UTC).timestamp()),
                "text": POST_TEXT,
            },
            {"id": 2, "date": int(at(1, 8).timestamp()), "text": FORMULA_TEXT},
        ],
    )
    await service.upsert_comments(
        session,
        owner_id=-5,
        post_id=1,
        comments=[
            comment(1, 10, at(1, 9)),
            comment(2, 10, at(1, 10)),
            comment(4, 10, at(3, 23, 59, 59)),
            comment(7, -5, at(5, 0)),  # a community answering in its own name
        ],
    )
    await service.upsert_comments(
        session, owner_id=-5, post_id=2, comments=[comment(3, 11, at(1, 12), deleted=True)]
    )
    thread = {"count": 1, "items": [comment(6, 10, at(3, 9))]}
    # Post 3 itself is not stored: only its comments (and a reply in a thread).
    await service.upsert_comments(
        session, owner_id=-5, post_id=3, comments=[comment(5, 12, at(3, 8), thread=thread)]
    )
    await service.upsert_comments(
        session, owner_id=-7, post_id=1, comments=[comment(1, 10, at(1)), comment(2, 20, at(3))]
    )
    await session.execute(
        insert(CommentAnalysis),
        [
            analysis(-5, 1, {"вода": 2, "горячий": 1, "и": 1, "очень": 1}),
            analysis(-5, 4, {"вода": 1, "отключить": 1, "не": 1}),
            analysis(-5, 3, {"вода": 5, "скандал": 3}),  # deleted: not counted
            analysis(-7, 1, {"парк": 4}),
        ],
    )
    await session.flush()


@pytest.fixture
async def data(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with sessionmaker.begin() as session:
        await session.execute(
            text("TRUNCATE comments, posts, communities, comment_analyses, reports")
        )
        await populate(session)


# -- what the reports of the seeded data hold ---------------------------------------------------

ALL_DAYS = [
    {"date": "2026-03-01", "comments": 3, "deleted": 1},
    {"date": "2026-03-02", "comments": 0, "deleted": 0},
    {"date": "2026-03-03", "comments": 3, "deleted": 0},
    {"date": "2026-03-04", "comments": 0, "deleted": 0},
    {"date": "2026-03-05", "comments": 1, "deleted": 0},
]
ALL_TOTALS = {
    "comments": 7,
    "deleted": 1,
    "authors": 4,
    "posts": 3,
    "days": 5,
    "active_days": 3,
    "analysed": 2,
}
ALL_AUTHORS = [(10, 4, 0), (-5, 1, 0), (11, 1, 1), (12, 1, 0)]
ALL_POSTS = [(1, 4), (3, 2), (2, 1)]
ALL_KEYWORDS = [("вода", 3, 2), ("горячий", 1, 1), ("отключить", 1, 1)]


def check_full(document: dict[str, Any]) -> None:
    assert document["group_id"] == 5
    assert document["community"] == {"id": 5, "screen_name": "water", "name": NAME}
    assert document["community_found"] is True
    assert document["period"] == {
        "since": None,
        "until": None,
        "first_comment_at": at(1, 9).isoformat(),
        "last_comment_at": at(5, 0).isoformat(),
    }
    assert document["totals"] == ALL_TOTALS
    assert document["days"] == ALL_DAYS
    assert [(a["from_id"], a["comments"], a["deleted"]) for a in document["top_authors"]] == (
        ALL_AUTHORS
    )
    assert document["top_authors"][0]["url"] == "https://vk.com/id10"
    assert document["top_authors"][1]["url"] == "https://vk.com/club5"
    posts = document["top_posts"]
    assert [(p["post_id"], p["comments"]) for p in posts] == ALL_POSTS
    assert posts[0]["text"] == POST_TEXT
    assert posts[0]["url"] == "https://vk.com/wall-5_1"
    assert posts[0]["date"] == datetime(2026, 2, 28, 12, tzinfo=UTC).isoformat()
    assert (posts[1]["date"], posts[1]["text"]) == (None, None)  # post 3 is not stored
    keywords = [(k["term"], k["count"], k["comments"]) for k in document["keywords"]]
    assert keywords == ALL_KEYWORDS
    assert document["notes"] == []


def check_period(document: dict[str, Any]) -> None:
    """03-03 03:00+03:00 (= 00:00 UTC) inclusive .. 03-05 00:00 UTC exclusive."""
    assert document["totals"] == {
        "comments": 3,
        "deleted": 0,
        "authors": 2,
        "posts": 2,
        "days": 2,
        "active_days": 1,
        "analysed": 1,
    }
    assert document["days"] == ALL_DAYS[2:4]
    assert [(a["from_id"], a["comments"]) for a in document["top_authors"]] == [(10, 2), (12, 1)]
    assert [(p["post_id"], p["comments"]) for p in document["top_posts"]] == [(3, 2), (1, 1)]
    keywords = [(k["term"], k["count"], k["comments"]) for k in document["keywords"]]
    assert keywords == [("вода", 1, 1), ("отключить", 1, 1)]


# -- through the API and a worker -------------------------------------------------------------


async def generate(
    client: httpx.AsyncClient, owner: str = "alice", timeout: float = 10.0, **params: Any
) -> dict[str, Any]:
    response = await client.post(REPORT, params=params, headers=headers(owner))
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["success"] is True
    assert accepted["data"]["function"] == "generate_report"
    done = await wait_for(client, accepted["data"]["job_id"], owner=owner, timeout=timeout)
    assert done["status"] == "complete", done
    assert done["progress"] == 100
    result: dict[str, Any] = done["result"]
    return result


async def download(
    client: httpx.AsyncClient, report_id: str, owner: str = "alice"
) -> httpx.Response:
    return await client.get(f"{DOWNLOAD}/{report_id}", headers=headers(owner))


async def test_json_report(client: httpx.AsyncClient, worker: Any, data: None) -> None:
    result = await generate(client, group_id=5)
    report_id = result["report_id"]
    assert result["download_url"] == f"{DOWNLOAD}/{report_id}"
    assert result["format"] == "json"
    assert result["community_found"] is True
    assert result["totals"] == ALL_TOTALS

    response = await download(client, report_id)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="comments-report-5-')
    assert disposition.endswith('.json"')
    assert result["filename"] in disposition
    assert response.headers["x-content-type-options"] == "nosniff"
    assert result["size_bytes"] == len(response.content)
    check_full(response.json())


async def test_csv_report(client: httpx.AsyncClient, worker: Any, data: None) -> None:
    result = await generate(client, group_id=5, format="csv", top_n=2)
    response = await download(client, result["report_id"])
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].endswith('.csv"')
    assert b"\r\n" in response.content  # RFC 4180 line ends

    sections: dict[str, list[list[str]]] = {}
    rows = list(csv.reader(io.StringIO(response.content.decode(), newline="")))
    while rows:
        end = rows.index([])
        name, header, *body = rows[:end]
        sections[name[0]] = [header, *body]
        rows = rows[end + 1 :]
    assert list(sections) == ["summary", "days", "top_authors", "top_posts", "keywords", "notes"]
    summary = dict(sections["summary"][1:])
    assert summary["group_id"] == "5"
    assert summary["name"] == NAME
    assert summary["since"] == ""
    assert (summary["comments"], summary["deleted"], summary["authors"]) == ("7", "1", "4")
    assert sections["days"] == [
        ["date", "comments", "deleted"],
        *([d["date"], str(d["comments"]), str(d["deleted"])] for d in ALL_DAYS),
    ]
    assert sections["top_authors"] == [
        ["rank", "from_id", "comments", "deleted", "url"],
        ["1", "10", "4", "0", "https://vk.com/id10"],
        ["2", "-5", "1", "0", "https://vk.com/club5"],  # a number, not a formula: as it is
    ]
    assert [row[:3] for row in sections["top_posts"]] == [
        ["rank", "post_id", "comments"],
        ["1", "1", "4"],
        ["2", "3", "2"],
    ]
    assert sections["top_posts"][1][5] == POST_TEXT
    assert sections["keywords"] == [
        ["rank", "term", "count", "comments"],
        ["1", "вода", "3", "2"],
        ["2", "горячий", "1", "1"],
    ]
    assert sections["notes"] == [["note"]]

    # Text a spreadsheet would run as a formula is defused.
    everything = await generate(client, group_id=5, format="csv")
    body = (await download(client, everything["report_id"])).content.decode()
    posts = [row for row in csv.reader(io.StringIO(body, newline="")) if row[:2] == ["3", "2"]]
    assert posts[0][5] == "'" + FORMULA_TEXT


async def test_html_report(client: httpx.AsyncClient, worker: Any, data: None) -> None:
    result = await generate(client, group_id=5, format="html")
    response = await download(client, result["report_id"])
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-disposition"].endswith('.html"')
    assert "script-src" not in response.headers["content-security-policy"]
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    page = response.text
    assert page.startswith("<!DOCTYPE html>")
    assert "<style>" in page and "<svg" in page and "</svg>" in page
    # Untrusted text is escaped everywhere: the community's name, a post's text.
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt; &amp; Co" in page
    assert "Горячая вода &lt;img src=x onerror=alert(1)&gt;" in page
    # One bar per day, zero days included, each with its count.
    assert page.count("<title>2026-03-") == 5
    assert "<title>2026-03-01: 3 comments (1 deleted)</title>" in page
    assert "<title>2026-03-02: 0 comments (0 deleted)</title>" in page
    assert '<td class="n">4</td>' in page  # author 10's comments
    assert "<td>вода</td>" in page
    assert 'href="https://vk.com/wall-5_1"' in page


async def test_period(client: httpx.AsyncClient, worker: Any, data: None) -> None:
    result = await generate(client, group_id=5, **PERIOD)
    document = (await download(client, result["report_id"])).json()
    check_period(document)
    assert document["period"]["since"] == "2026-03-03T00:00:00+00:00"
    assert document["period"]["first_comment_at"] == at(3, 8).isoformat()
    assert document["period"]["last_comment_at"] == at(3, 23, 59, 59).isoformat()


async def test_unknown_community_and_empty_period(
    client: httpx.AsyncClient, worker: Any, data: None
) -> None:
    unknown = await generate(client, group_id=999)
    assert unknown["community_found"] is False
    assert unknown["totals"] == dict.fromkeys(ALL_TOTALS, 0)
    assert any("not stored" in note for note in unknown["notes"])
    document = (await download(client, unknown["report_id"])).json()
    assert (document["community"], document["days"], document["keywords"]) == (None, [], [])

    # A known community, a period without comments: every day of the period, all zeros.
    quiet = await generate(
        client, group_id=5, since="2026-04-01T00:00:00Z", until="2026-04-04T00:00:00Z"
    )
    document = (await download(client, quiet["report_id"])).json()
    assert document["days"] == [
        {"date": f"2026-04-0{day}", "comments": 0, "deleted": 0} for day in (1, 2, 3)
    ]
    assert document["totals"]["comments"] == 0
    assert document["notes"] == ["no stored comments in this period"]
    page = await generate(
        client, group_id=5, format="html", since="2026-04-01T00:00:00Z", until="2026-04-02T00:00Z"
    )
    assert "<svg" in (await download(client, page["report_id"])).text


async def test_a_report_is_its_owners(client: httpx.AsyncClient, worker: Any, data: None) -> None:
    result = await generate(client, group_id=5, format="csv")
    report_id = result["report_id"]
    foreign = await download(client, report_id, owner="bob")
    assert foreign.status_code == 404
    assert foreign.json() == {
        "error": "ReportNotFound",
        "detail": f"report {report_id!r} not found",
    }
    assert (await download(client, report_id, owner="root")).status_code == 200  # admin
    assert (await download(client, report_id)).status_code == 200

    unknown = await download(client, "no-such-report")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "ReportNotFound"
    # Not swallowed by `/{comment_ref}/analysis`.
    assert (await download(client, "analysis")).status_code == 404
    for malformed in ("-starts-with-dash", "has%20space", "x" * 129, "semi;colon"):
        response = await download(client, malformed)
        assert response.status_code == 422, malformed
    anonymous = await client.get(f"{DOWNLOAD}/{report_id}")
    assert anonymous.status_code == 401

    # An admin's report is not alice's to read.
    admins = await generate(client, owner="root", group_id=5)
    assert (await download(client, admins["report_id"])).status_code == 404
    assert (await download(client, admins["report_id"], owner="root")).status_code == 200


async def test_a_report_not_made_yet_says_so(
    client: httpx.AsyncClient, worker_handle: WorkerHandle, data: None
) -> None:
    # No worker yet: the job waits, and its report is not ready.
    queued = await client.post(REPORT, params={"group_id": 5}, headers=headers("alice"))
    job_id = queued.json()["data"]["job_id"]
    pending = await download(client, job_id)
    assert pending.status_code == 409
    assert pending.json()["error"] == "ReportNotReady"
    assert pending.json()["status"] == "queued"
    assert pending.json()["status_url"] == f"/api/v1/arq/status/{job_id}"
    assert (await download(client, job_id, owner="bob")).status_code == 404  # not bob's job
    await worker_handle.start()
    await wait_for(client, job_id)
    assert (await download(client, job_id)).status_code == 200

    # A job that never made its report says why.
    later = await enqueue(client, "generate_report", kwargs={"group_id": 5}, defer_by=600)
    later_id = later.json()["job_id"]
    await client.delete(f"/api/v1/arq/abort/{later_id}", headers=headers("alice"))
    gone = await download(client, later_id)
    assert gone.status_code == 404
    assert gone.json()["detail"] == f"report {later_id!r} not found: its job aborted"


async def test_reports_are_listed_for_their_owner(
    client: httpx.AsyncClient, worker: Any, data: None
) -> None:
    first = await generate(client, group_id=5, format="csv")
    second = await generate(client, group_id=7)
    bobs = await generate(client, owner="bob", group_id=5, format="html")

    mine = (await client.get(DOWNLOAD, headers=headers("alice"))).json()
    assert mine["total"] == 2
    assert [item["id"] for item in mine["items"]] == [second["report_id"], first["report_id"]]
    item = mine["items"][1]
    assert (item["group_id"], item["format"], item["size_bytes"]) == (5, "csv", first["size_bytes"])
    assert item["summary"]["comments"] == 7
    assert "content" not in item
    assert {item["owner"] for item in mine["items"]} == {"alice"}  # a user's are their own

    only_5 = (await client.get(DOWNLOAD, params={"group_id": 5}, headers=headers("alice"))).json()
    assert [item["id"] for item in only_5["items"]] == [first["report_id"]]
    everyone = (await client.get(DOWNLOAD, headers=headers("root"))).json()
    assert {item["id"]: item["owner"] for item in everyone["items"]} == {
        first["report_id"]: "alice",
        second["report_id"]: "alice",
        bobs["report_id"]: "bob",
    }
    paged = await client.get(DOWNLOAD, params={"limit": 1, "offset": 1}, headers=headers("root"))
    assert paged.json()["total"] == 3 and len(paged.json()["items"]) == 1
    assert (
        await client.get(DOWNLOAD, params={"limit": 0}, headers=headers("root"))
    ).status_code == 422


@pytest.mark.parametrize(
    "params",
    [
        {"group_id": 5, "format": "pdf"},
        {"group_id": 0},
        {"group_id": -5},
        {"group_id": 5, "top_n": 0},
        {"group_id": 5, "top_n": 201},
        {"group_id": 5, "since": "yesterday"},
        {"group_id": 5, "since": "2026-03-01T00:00:00"},  # no timezone
        {"group_id": 5, "since": "2026-03-02T00:00:00Z", "until": "2026-03-02T00:00:00Z"},
        {"group_id": 5, "since": "2000-01-01T00:00:00Z", "until": "2020-01-01T00:00:00Z"},
    ],
)
async def test_bad_input_is_422(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    response = await client.post(REPORT, params=params, headers=headers("alice"))
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


async def test_needs_a_credential(client: httpx.AsyncClient) -> None:
    assert (await client.post(REPORT, params={"group_id": 5})).status_code == 401


async def test_a_large_group_is_counted_exactly_with_keywords_read_across_chunks(
    client: httpx.AsyncClient,
    worker: Any,
    sessionmaker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """4,500 comments over 30 days, all analysed. The keyword rows are read two at a time, so
    the ranking spans chunks: вода and the stop word и fill the first, кран comes in the second.

    (What this does not show is that memory stays flat: `python -m bench.admin` measures that.)
    """
    monkeypatch.setattr(collect, "STREAM_CHUNK", 2)
    count, start = 4500, datetime(2026, 1, 1, tzinfo=UTC)
    async with sessionmaker.begin() as session:
        await session.execute(
            text("TRUNCATE comments, posts, communities, comment_analyses, reports")
        )
        for post_id in range(1, 10):
            comments = [
                comment(i, 1000 + i % 50, start + timedelta(days=i % 30, seconds=i))
                for i in range(post_id, count + 1, 9)
            ]
            await service.upsert_comments(session, owner_id=-8, post_id=post_id, comments=comments)
        await session.execute(
            insert(CommentAnalysis),
            [
                analysis(-8, i, {"вода": 1, "кран": i % 3, "и": 2} if i % 3 else {"вода": 2})
                for i in range(1, count + 1)
            ],
        )
    result = await generate(client, group_id=8, top_n=5, timeout=30)
    assert result["totals"] == {
        "comments": count,
        "deleted": 0,
        "authors": 50,
        "posts": 9,
        "days": 30,
        "active_days": 30,
        "analysed": count,
    }
    document = (await download(client, result["report_id"])).json()
    assert [d["comments"] for d in document["days"]] == [150] * 30
    assert document["days"][0]["date"] == "2026-01-01"
    assert document["days"][-1]["date"] == "2026-01-30"
    assert [(a["comments"]) for a in document["top_authors"]] == [90] * 5
    assert [a["from_id"] for a in document["top_authors"]] == [1000, 1001, 1002, 1003, 1004]
    assert [p["comments"] for p in document["top_posts"]] == [500] * 5
    # вода: 1 in each of the 3,000 comments with i % 3 != 0, 2 in the other 1,500.
    # кран: 1 where i % 3 == 1, 2 where i % 3 == 2 (1,500 comments each).
    keywords = [(k["term"], k["count"], k["comments"]) for k in document["keywords"]]
    assert keywords == [("вода", 6000, 4500), ("кран", 4500, 3000)]


# -- the domain functions, on PostgreSQL and SQLite -------------------------------------------


async def job(session: AsyncSession, job_id: str, owner: str) -> None:
    now = datetime.now(UTC)
    session.add(
        JobRecord(
            job_id=job_id,
            function="generate_report",
            queue_name="arq:queue",
            args={},
            owner=owner,
            status="in_progress",
            enqueued_at=now,
            scheduled_for=now,
        )
    )


async def check_domain(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Collect, render, store and re-store (a job run again), read back with ownership."""
    analyzer = MorphAnalyzer()
    async with sessionmaker() as session:
        full = await collect_report(session, group_id=5, analyzer=analyzer)
        period = await collect_report(
            session,
            group_id=5,
            since=datetime.fromisoformat(PERIOD["since"]),
            until=datetime.fromisoformat(PERIOD["until"]),
            analyzer=analyzer,
        )
    check_full(full.to_document())
    check_period(period.to_document())
    rows = list(csv.reader(io.StringIO(render_csv(full), newline="")))
    assert ["2026-03-02", "0", "0"] in rows

    stages: list[tuple[float, str | None]] = []

    async def progress(percent: float, message: str | None) -> None:
        stages.append((percent, message))

    async with sessionmaker.begin() as session:
        await job(session, "report-1", "alice")
    first = await generate_report(
        sessionmaker, report_id="report-1", group_id=5, analyzer=analyzer, progress=progress
    )
    assert [percent for percent, _ in stages] == sorted(percent for percent, _ in stages)
    assert len(stages) >= 5
    again = await generate_report(
        sessionmaker,
        report_id="report-1",
        group_id=5,
        report_format=ReportFormat.HTML,
        params={"group_id": 5, "format": "html"},
        analyzer=analyzer,
    )
    assert again["format"] == "html" and again["totals"] == first["totals"] == ALL_TOTALS
    alice = Principal("alice", Role.USER)
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Report)) == 1
        stored = await get_report(session, "report-1", principal=alice)
        assert (stored.owner, stored.format, stored.group_id) == ("alice", "html", 5)
        assert stored.params == {"group_id": 5, "format": "html"}
        assert stored.content_type == "text/html; charset=utf-8"
        assert stored.size_bytes == len(stored.content) == again["size_bytes"]
        assert stored.summary == ALL_TOTALS
        assert b"<svg" in stored.content
        with pytest.raises(ReportNotFound):
            await get_report(session, "report-1", principal=Principal("bob", Role.USER))
        admin = Principal("root", Role.ADMIN)
        assert (await get_report(session, "report-1", principal=admin)).id == "report-1"

    # A job with no history row belongs to the system: admins only.
    await generate_report(sessionmaker, report_id="report-2", group_id=5)
    async with sessionmaker() as session:
        assert (await session.get(Report, "report-2")) is not None
        with pytest.raises(ReportNotFound):
            await get_report(session, "report-2", principal=alice)


async def test_domain_on_postgresql(
    sessionmaker: async_sessionmaker[AsyncSession], data: None
) -> None:
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


def test_the_chart_bins_long_periods() -> None:
    """Over `MAX_CHART_BARS` days, a bar holds several days; the counts add up."""
    days = [
        DayCount(datetime(2020, 1, 1).date() + timedelta(days=n), n % 4, n % 2) for n in range(1000)
    ]
    svg = render_chart(days)
    assert svg.count("<title>") == 334  # 3 days a bar
    assert "<title>2020-01-01 – 2020-01-03: 3 comments (1 deleted)</title>" in svg
