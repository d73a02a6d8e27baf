"""Text analysis of stored comments through the endpoints and a real worker."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq.exceptions import InvalidJobArguments
from src.arq.service import ArqService
from src.comments import service
from src.comments.analysis import comment_conditions, comment_pages
from src.comments.models import CommentAnalysis
from tests.arq.helpers import API, enqueue, wait_for
from tests.conftest import headers

WATER = [
    "Опять нет горячей воды, сколько можно!",
    "Горячая вода пропала третий день",
    "Когда дадут горячую воду? Жалоба в управляющую",
    "Без горячей воды невозможно жить",
    "Горячую воду отключили без предупреждения",
]
OTHER = [
    "Отличный концерт в парке вчера",
    "Парк очень красивый осенью",
    "Новая детская площадка во дворе",
    "Концерт понравился, музыка отличная",
    "Спасибо за площадку для детей",
    "Во дворе поставили новые скамейки",
]


@pytest.fixture(autouse=True)
async def stored(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Community 5: post 1 about hot water, post 2 about other things."""
    async with sessionmaker.begin() as session:
        await session.execute(text("TRUNCATE comments, posts, communities, comment_analyses"))
        for post_id, texts in ((1, WATER), (2, OTHER)):
            comments = [
                {
                    "id": post_id * 100 + i,
                    "from_id": 10 + i,
                    "date": 1_700_000_000 + i,
                    "text": body,
                    "likes": {"count": i},
                }
                for i, body in enumerate(texts)
            ]
            await service.upsert_comments(session, owner_id=-5, post_id=post_id, comments=comments)


async def queued(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    job_id: str = response.json()["data"]["job_id"]
    return job_id


async def test_analyze_a_text(client: httpx.AsyncClient, worker: Any) -> None:
    job_id = (
        await enqueue(
            client,
            "analyze_text_morphology",
            kwargs={"text": "Спасибо за комментарии [id1|Ивану] #вода"},
        )
    ).json()["job_id"]
    done = await wait_for(client, job_id)
    assert done["status"] == "complete", done
    tokens = {token["text"]: token for token in done["result"]["tokens"]}
    assert tokens["комментарии"]["lemma"] == "комментарий"
    assert tokens["комментарии"]["pos"] == "NOUN"
    assert done["result"]["hashtags"] == ["вода"]
    assert done["result"]["mentions"][0]["object_id"] == 1


async def test_analyze_stored_comments_stores_each_once(
    client: httpx.AsyncClient, worker: Any, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    response = await client.post(
        "/api/v1/comments/analyze/async",
        params={"comment_ids": "-5_100,-5_101,-5_999", "analysis_type": "morphology"},
        headers=headers("alice"),
    )
    done = await wait_for(client, await queued(response))
    assert done["result"]["analyzed"] == 2
    assert done["result"]["missing"] == ["-5_999"]
    stored = await client.get("/api/v1/comments/-5_101/analysis", headers=headers("bob"))
    assert stored.status_code == 200
    analysis = stored.json()
    assert analysis["lemma_counts"]["горячий"] == 1
    assert analysis["lemma_counts"]["вода"] == 1
    assert analysis["stale"] is False
    not_yet = await client.get("/api/v1/comments/-5_200/analysis", headers=headers("bob"))
    assert not_yet.status_code == 404
    assert "not been analysed" in not_yet.json()["detail"]
    again = await client.post(
        "/api/v1/comments/analyze/async",
        params={"comment_ids": "-5_100,-5_101"},
        headers=headers("alice"),
    )
    await wait_for(client, await queued(again))
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(CommentAnalysis)) == 2


async def test_keywords_of_a_post_against_the_community(
    client: httpx.AsyncClient, worker: Any
) -> None:
    response = await client.post(
        "/api/v1/comments/keywords/async",
        params={"group_id": 5, "post_id": 1, "top_n": 5},
        headers=headers("alice"),
    )
    done = await wait_for(client, await queued(response))
    assert done["status"] == "complete", done
    result = done["result"]
    assert result["documents"] == 5
    assert result["ranking"].startswith("tf-idf")
    terms = [keyword["term"] for keyword in result["keywords"]]
    assert terms[0] in ("вода", "горячий", "горячий вода")
    assert "горячий вода" in terms
    phrase = next(k for k in result["keywords"] if k["term"] == "горячий вода")
    assert phrase["phrase"] == "горячая вода" and phrase["count"] == 5
    assert not {"не", "без", "нет", "можно"} & set(terms)


async def test_batch_processing_with_progress(
    client: httpx.AsyncClient, worker: Any, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    job_id = (
        await enqueue(
            client,
            "process_batch_comments",
            kwargs={"group_id": 5, "operations": ["morphology", "keywords"]},
        )
    ).json()["job_id"]
    done = await wait_for(client, job_id)
    assert done["status"] == "complete", done
    assert done["result"]["comments"] == 11
    assert done["result"]["analyses_stored"] == 11
    assert done["progress"] == 100
    assert done["result"]["keywords"]["keywords"]
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(CommentAnalysis)) == 11


async def test_bad_analysis_input_is_rejected_at_enqueue(client: httpx.AsyncClient) -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("analyze_text_morphology", {"text": ""}),
        ("analyze_text_morphology", {"text": "   "}),
        ("analyze_text_morphology", {"text": "я" * 200_001}),
        ("analyze_text_morphology", {}),
        ("analyze_text_morphology", {"comment_ids": ["5-100"]}),
        ("analyze_text_morphology", {"comment_ids": [f"-5_{i}" for i in range(1001)]}),
        ("extract_keywords", {"post_id": 1}),
        ("extract_keywords", {"group_id": 5, "since": "2026-01-01T00:00:00"}),
        ("process_batch_comments", {"group_id": 5, "operations": ["sentiment"]}),
        ("process_batch_comments", {"group_id": 5, "operations": []}),
    ]
    for function, kwargs in cases:
        response = await enqueue(client, function, kwargs=kwargs)
        assert response.status_code == 422, (function, kwargs, response.text)
        assert response.json()["error"] == "InvalidJobArguments"
    no_ids = await client.post("/api/v1/comments/analyze/async", headers=headers("alice"))
    assert no_ids.status_code == 422
    assert (await client.get(f"{API}/jobs", headers=headers("alice"))).json()["total"] == 0


async def test_ten_megabyte_text_is_refused_with_the_limit(
    client: httpx.AsyncClient, service: ArqService
) -> None:
    text = "слово " * 1_750_000  # 10.5 MB
    response = await enqueue(client, "analyze_text_morphology", kwargs={"text": text})
    assert response.status_code == 413  # over the API's body limit: refused while reading
    assert response.json()["error"] == "PayloadTooLarge"
    with pytest.raises(InvalidJobArguments) as refused:  # the Python API: the task's own limit
        await service.enqueue_job("analyze_text_morphology", text=text)
    error = refused.value.extra["errors"][0]
    assert error["loc"][-1] == "text"
    assert "100000" in error["msg"]


async def test_text_without_cyrillic_is_analysed_and_flagged(
    client: httpx.AsyncClient, worker: Any
) -> None:
    job_id = (
        await enqueue(client, "analyze_text_morphology", kwargs={"text": "hello world 2026 🙂"})
    ).json()["job_id"]
    done = await wait_for(client, job_id)
    assert done["status"] == "complete"
    assert done["result"]["has_cyrillic"] is False
    assert done["result"]["numbers"] == ["2026"]


async def test_pages_hold_every_comment_once_in_order(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    # Five more comments posted in one second (the latest); the keyset breaks ties by id.
    async with sessionmaker.begin() as session:
        same_second = [
            {"id": 300 + i, "from_id": 1, "date": 1_700_000_100, "text": f"ещё {i}", "likes": {}}
            for i in range(5)
        ]
        await service.upsert_comments(session, owner_id=-5, post_id=3, comments=same_second)
    conditions = comment_conditions(owner_id=-5)
    for newest_first in (False, True):
        pages = [
            page
            async for page in comment_pages(
                sessionmaker, conditions, newest_first=newest_first, size=3
            )
        ]
        assert [len(page) for page in pages] == [3, 3, 3, 3, 3, 1]
        keys = [(comment.date, comment.comment_id) for page in pages for comment in page]
        assert keys == sorted(keys, reverse=newest_first)
        assert len(set(keys)) == len(WATER) + len(OTHER) + 5
    newest = [
        comment.comment_id
        async for page in comment_pages(
            sessionmaker, conditions, newest_first=True, limit=4, size=3
        )
        for comment in page
    ]
    assert newest == [304, 303, 302, 301]
