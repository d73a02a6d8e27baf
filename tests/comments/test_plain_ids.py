"""`POST /api/v1/comments/analyze/async` with plain comment ids (`25`), not only `{owner}_{id}`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.comments import references, service
from src.comments.router import AMBIGUOUS_ID_RULE, UNKNOWN_ID_RULE
from tests.arq.helpers import API, wait_for
from tests.conftest import headers

ANALYZE = "/api/v1/comments/analyze/async"


@pytest.fixture(autouse=True)
async def stored(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Community 5 has comments 1-5 and 7; community 7 has 5 and 6; community 9 has 5."""
    async with sessionmaker.begin() as session:
        await session.execute(text("TRUNCATE comments, posts, communities, comment_analyses"))
        for owner_id, ids in ((-5, [1, 2, 3, 4, 5, 7]), (-7, [5, 6]), (-9, [5])):
            comments = [
                {"id": i, "from_id": 10, "date": 1_700_000_000 + i, "text": f"Горячая вода {i}"}
                for i in ids
            ]
            await service.upsert_comments(session, owner_id=owner_id, post_id=1, comments=comments)


async def analyze(client: httpx.AsyncClient, **params: Any) -> httpx.Response:
    return await client.post(ANALYZE, params=params, headers=headers("alice"))


async def test_plain_ids_of_one_stored_comment_each_are_analysed(
    client: httpx.AsyncClient, worker: Any
) -> None:
    response = await analyze(client, comment_ids="1,2,3,4,6", analysis_type="morphology")
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert data["params"]["comment_ids"] == ["-5_1", "-5_2", "-5_3", "-5_4", "-7_6"]
    done = await wait_for(client, data["job_id"])
    assert done["status"] == "complete", done
    assert (done["result"]["analyzed"], done["result"]["missing"]) == (5, [])
    stored = await client.get("/api/v1/comments/-7_6/analysis", headers=headers("bob"))
    assert stored.status_code == 200, stored.text


async def test_forms_mix_and_a_comment_named_twice_is_named_once(
    client: httpx.AsyncClient,
) -> None:
    response = await analyze(client, comment_ids=" 1, -5_1 ,-9_5,7", analysis_type="keywords")
    assert response.status_code == 202, response.text
    assert response.json()["data"]["function"] == "extract_keywords"
    assert response.json()["data"]["params"]["comment_ids"] == ["-5_1", "-9_5", "-5_7"]


async def test_an_id_on_several_walls_is_a_422_listing_them(client: httpx.AsyncClient) -> None:
    response = await analyze(client, comment_ids="1,5,6")
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "UnresolvedCommentIds"
    [error] = body["errors"]
    assert error["loc"] == ["query", "comment_ids"]
    assert (error["type"], error["input"]) == ("ambiguous_comment_id", "5")
    assert error["matches"] == ["-5_5", "-7_5", "-9_5"]
    assert error["msg"] == AMBIGUOUS_ID_RULE  # the rule, as the operation's docs state it
    assert body["detail"] == (
        "comment id 5 is on 3 walls: -5_5, -7_5, -9_5; name one as {owner_id}_{comment_id}, "
        "or give group_id"
    )
    # Nothing was queued.
    assert (await client.get(f"{API}/jobs", headers=headers("alice"))).json()["total"] == 0


async def test_group_id_narrows_a_plain_id_to_its_community(client: httpx.AsyncClient) -> None:
    response = await analyze(client, comment_ids="5,6", group_id=7)
    assert response.status_code == 202, response.text
    assert response.json()["data"]["params"]["comment_ids"] == ["-7_5", "-7_6"]
    # Full references are taken as they are, whatever group_id says.
    mixed = await analyze(client, comment_ids="5,-5_1", group_id=9)
    assert mixed.json()["data"]["params"]["comment_ids"] == ["-9_5", "-5_1"]


async def test_an_unknown_plain_id_is_a_422_saying_so(client: httpx.AsyncClient) -> None:
    response = await analyze(client, comment_ids="1,42,43")
    assert response.status_code == 422, response.text
    body = response.json()
    assert [(e["type"], e["input"], e["matches"]) for e in body["errors"]] == [
        ("unknown_comment_id", "42", []),
        ("unknown_comment_id", "43", []),
    ]
    assert {e["msg"] for e in body["errors"]} == {UNKNOWN_ID_RULE}
    assert body["detail"] == "no stored comment has the id 42; no stored comment has the id 43"
    in_community = await analyze(client, comment_ids="6", group_id=5)
    assert in_community.status_code == 422
    assert in_community.json()["detail"] == "no stored comment has the id 6 on the wall -5"


@pytest.mark.parametrize("comment_ids", ["", "1,", "a", "1_", "_1", "1234567890123456789"])
async def test_malformed_ids_are_refused_at_the_edge(
    client: httpx.AsyncClient, comment_ids: str
) -> None:
    response = await analyze(client, comment_ids=comment_ids)
    assert response.status_code == 422, response.text


async def test_an_ambiguous_id_lists_a_bounded_number_of_forms(
    sessionmaker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(references, "LISTED_MATCHES", 2)
    async with sessionmaker() as session:
        resolved = await references.resolve_comment_refs(session, ["5"])
    assert resolved.refs == []
    [unresolved] = resolved.unresolved
    assert (unresolved.total, unresolved.matches) == (3, ["-5_5", "-7_5"])
    assert "comment id 5 is on 3 walls: -5_5, -7_5 and 1 more;" in unresolved.explain()
