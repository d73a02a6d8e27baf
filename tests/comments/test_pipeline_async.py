"""`POST /api/v1/comments/pipeline/async`: a community's parse, morphology of its new comments,
statistics and report, queued as one chain of jobs that run one after the other; the completion
webhook tells the caller when the report is ready (or that the chain failed)."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.comments import service
from src.webhooks.signing import verify
from tests.arq.helpers import API, FINISHED, at, enqueue, status, wait_for
from tests.comments.test_pipeline import TEXTS, empty_tables  # noqa: F401 (fixture)
from tests.conftest import headers
from tests.vk.fake_server import Error, FakePost, FakeVK, community_with_posts, make_comment
from tests.webhooks.test_notifications import Receiver, receiver  # noqa: F401 (fixture)

PIPELINE = "/api/v1/comments/pipeline/async"
GROUP = 12
SECRET = "pipeline-secret-5d1c"
STEPS = [
    "parse_vk_comments",
    "process_batch_comments",
    "update_community_statistics",
    "generate_report",
]
TIMEOUT = 60.0


@pytest.fixture
def hooks(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Receiver:  # noqa: F811
    """The webhook receiver, on an address the workers may post to."""
    monkeypatch.setenv("NOTIFY_ALLOW_HOSTS", "127.0.0.1/32")
    return receiver


async def pipeline(
    client: httpx.AsyncClient, owner: str = "alice", hook: Receiver | None = None, **params: Any
) -> httpx.Response:
    extra = {"X-Notify-Url": hook.url, "X-Notify-Secret": SECRET} if hook is not None else {}
    return await client.post(PIPELINE, params=params, headers={**headers(owner), **extra})


async def settled_webhooks(client: httpx.AsyncClient, hooks: Receiver) -> list[dict[str, Any]]:
    """The webhooks `hooks` received once every webhook job queued has ended (so none is still
    on its way), as JSON."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while True:
        listed = await client.get(
            f"{API}/jobs", params={"function": "send_notification"}, headers=headers("alice")
        )
        jobs = listed.json()["items"]
        if jobs and all(job["status"] in FINISHED for job in jobs) and hooks.requests:
            return [json.loads(request.body) for request in hooks.requests]
        assert asyncio.get_running_loop().time() < deadline, (jobs, hooks.requests)
        await asyncio.sleep(0.05)


async def test_the_pipeline_runs_its_four_steps_in_order_and_tells_when_the_report_is_ready(
    client: httpx.AsyncClient, fake_vk: FakeVK, hooks: Receiver, worker: Any
) -> None:
    community = fake_vk.add(
        community_with_posts(2, 10, 1, community_id=GROUP, screen_name="yard", name="Двор 12")
    )
    comments = [c for post in community.posts for top in post.comments for c in (top, *top.replies)]
    for index, comment in enumerate(comments):
        comment.text = TEXTS[index % len(TEXTS)]

    response = await pipeline(client, hook=hooks, group_id=GROUP, format="html", top_n=5)
    assert response.status_code == 202, response.text
    body = response.json()
    data = body["data"]
    assert [job["function"] for job in data["jobs"]] == STEPS
    ids = [job["job_id"] for job in data["jobs"]]
    assert len(set(ids)) == 4
    assert data["jobs"][0]["status"] == "queued"
    # The morphology waits for the parse (released at once only if the parse had already ended).
    assert data["jobs"][1]["status"] in ("waiting", "queued")
    assert [job["status"] for job in data["jobs"][2:]] == ["waiting", "waiting"]
    assert all(job["status_url"] == f"{API}/status/{job['job_id']}" for job in data["jobs"])
    assert data["report_id"] == ids[3]
    assert data["download_url"] == f"/api/v1/comments/reports/{ids[3]}"
    assert (data["group_id"], data["format"], data["top_n"], data["limit"]) == (
        GROUP,
        "html",
        5,
        100,
    )
    report_status = await status(client, ids[3])
    if report_status["status"] == "waiting":
        assert report_status["blocked_by"] == [ids[2]]
    assert report_status["depends_on"] == [ids[2]]

    done = [await wait_for(client, job_id, timeout=TIMEOUT) for job_id in ids]
    assert [job["status"] for job in done] == ["complete"] * 4, done
    for before, after in itertools.pairwise(done):
        assert at(after, "started_at") >= at(before, "finished_at")
    parse, morphology, statistics, report = (job["result"] for job in done)
    assert parse["comments_saved"] == len(comments) == 40
    # Nothing was analysed before: every comment is new.
    assert (morphology["comments"], morphology["analyses_stored"]) == (40, 40)
    assert morphology["only_unanalysed"] is True
    assert statistics["communities"] == 1
    (row,) = (await client.get("/api/v1/comments/stats", headers=headers("alice"))).json()
    assert (row["community_id"], row["comments"], row["analysed_comments"]) == (GROUP, 40, 40)
    assert row["jobs_by_status"] == {"complete": 1}
    assert report["download_url"] == data["download_url"]

    download = await client.get(data["download_url"], headers=headers("alice"))
    assert download.status_code == 200, download.text
    assert download.headers["content-type"].startswith("text/html")
    page = download.text
    assert "Двор 12" in page
    assert ">40<" in page  # the comments counted
    assert "вода" in page  # the top keyword of the comments' texts

    # One webhook, the report's: it is ready.
    (hook,) = await settled_webhooks(client, hooks)
    assert (hook["event"], hook["job_id"], hook["function"], hook["status"]) == (
        "job.finished",
        ids[3],
        "generate_report",
        "complete",
    )
    assert hook["result"]["download_url"] == data["download_url"]
    (request,) = hooks.requests
    signature = request.headers["x-signature"]
    assert verify(request.body, SECRET, signature, request.headers["x-signature-timestamp"])

    # New comments on VK: the next pipeline analyses those only.
    old = await client.get(f"/api/v1/comments/-{GROUP}_1/analysis", headers=headers("alice"))
    assert old.status_code == 200
    newest = max(c.date for c in comments)
    community.posts.append(
        FakePost(
            id=3,
            date=newest + 60,
            text="post 3",
            comments=[
                make_comment(100 + n, from_id=3000 + n, date=newest + 60 + n, text=TEXTS[0])
                for n in range(1, 4)
            ],
        )
    )
    again = await pipeline(client, group_id=GROUP)
    assert again.status_code == 202, again.text
    rerun = [
        await wait_for(client, job["job_id"], timeout=TIMEOUT)
        for job in again.json()["data"]["jobs"]
    ]
    assert [job["status"] for job in rerun] == ["complete"] * 4, rerun
    assert rerun[0]["result"]["comments_inserted"] == 3
    assert (rerun[1]["result"]["comments"], rerun[1]["result"]["analyses_stored"]) == (3, 3)
    (row,) = (await client.get("/api/v1/comments/stats", headers=headers("alice"))).json()
    assert (row["comments"], row["analysed_comments"]) == (43, 43)
    assert row["jobs_by_status"] == {"complete": 2}
    unchanged = await client.get(f"/api/v1/comments/-{GROUP}_1/analysis", headers=headers("alice"))
    assert unchanged.json()["analyzed_at"] == old.json()["analyzed_at"]  # not analysed again
    fresh = await client.get(f"/api/v1/comments/-{GROUP}_101/analysis", headers=headers("alice"))
    assert fresh.status_code == 200
    # The second pipeline asked for no webhook.
    assert len(hooks.requests) == 1


async def test_a_failed_parse_fails_the_rest_and_the_webhook_says_so(
    client: httpx.AsyncClient, fake_vk: FakeVK, hooks: Receiver, worker: Any
) -> None:
    fake_vk.add(community_with_posts(1, 3, community_id=GROUP))
    fake_vk.fail(
        "groups.getById", Error(15, "Access denied: community is blocked"), group_ids=GROUP
    )

    response = await pipeline(client, hook=hooks, group_id=GROUP, format="csv")
    assert response.status_code == 202, response.text
    ids = [job["job_id"] for job in response.json()["data"]["jobs"]]
    ended = [await wait_for(client, job_id, timeout=TIMEOUT) for job_id in ids]
    assert [job["status"] for job in ended] == ["failed"] * 4, ended
    assert ended[0]["error"]["type"] == "VKAccessDenied"
    for dependency, job in zip(ids, ended[1:], strict=False):
        assert job["error"] == {
            "type": "DependencyFailed",
            "message": f"dependency {dependency} failed",
        }
        assert job["started_at"] is None  # it never ran
    assert fake_vk.requests_for("wall.get") == []  # nothing was read past the failure

    (hook,) = await settled_webhooks(client, hooks)
    assert (hook["event"], hook["job_id"], hook["status"]) == ("job.finished", ids[3], "failed")
    assert hook["error"]["type"] == "DependencyFailed"
    missing = await client.get(response.json()["data"]["download_url"], headers=headers("alice"))
    assert missing.status_code == 404


async def test_the_batch_task_analyses_only_the_comments_without_an_analysis(
    client: httpx.AsyncClient, worker: Any, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with sessionmaker.begin() as session:
        await service.upsert_community(
            session, group={"id": GROUP, "screen_name": "y", "name": "Y"}
        )
        await service.upsert_comments(
            session,
            owner_id=-GROUP,
            post_id=1,
            comments=[
                {"id": n, "from_id": 10, "date": 1_700_000_000 + n, "text": TEXTS[n % 3]}
                for n in range(1, 6)
            ],
        )

    async def batch(refs: list[int], **extra: Any) -> dict[str, Any]:
        kwargs = {"comment_ids": [f"-{GROUP}_{n}" for n in refs], "operations": ["morphology"]}
        queued = await enqueue(client, "process_batch_comments", kwargs={**kwargs, **extra})
        assert queued.status_code == 202, queued.text
        done = await wait_for(client, queued.json()["job_id"], timeout=TIMEOUT)
        assert done["status"] == "complete", done
        result: dict[str, Any] = done["result"]
        return result

    assert (await batch([1, 2], only_unanalysed=True))["analyses_stored"] == 2
    # 99 is no stored comment; 1 and 2 have their analyses.
    assert (await batch([1, 2, 3, 4, 5, 99], only_unanalysed=True))["analyses_stored"] == 3
    assert (await batch([1, 2, 3, 4, 5], only_unanalysed=True))["analyses_stored"] == 0
    # Without the option every comment named is analysed again, as before.
    assert (await batch([1, 2, 99]))["analyses_stored"] == 2
    everything = await enqueue(
        client,
        "process_batch_comments",
        kwargs={"group_id": GROUP, "operations": ["morphology"], "only_unanalysed": True},
    )
    done = await wait_for(client, everything.json()["job_id"], timeout=TIMEOUT)
    assert (done["result"]["comments"], done["progress"]) == (0, 100)


async def test_another_user_cannot_see_the_pipelines_jobs(client: httpx.AsyncClient) -> None:
    response = await pipeline(client, group_id=GROUP)  # no worker: the chain stays queued
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    for job in data["jobs"]:
        assert (await client.get(job["status_url"], headers=headers("bob"))).status_code == 404
        assert (await client.get(job["status_url"], headers=headers("alice"))).status_code == 200
    download = await client.get(data["download_url"], headers=headers("bob"))
    assert download.status_code == 404
    listed = (await client.get(f"{API}/jobs", headers=headers("bob"))).json()
    assert listed["total"] == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"format": "html"}, "group_id"),
        ({"group_id": 0}, "group_id"),
        ({"group_id": GROUP, "format": "exe"}, "format"),
        ({"group_id": GROUP, "limit": 0}, "limit"),
        ({"group_id": GROUP, "limit": 10_001}, "limit"),
        ({"group_id": GROUP, "top_n": 0}, "top_n"),
        ({"group_id": GROUP, "top_n": 201}, "top_n"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field_and_queues_nothing(
    client: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    response = await pipeline(client, **params)
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["errors"]] == [["query", field]]
    assert (await client.get(f"{API}/jobs", headers=headers("alice"))).json()["total"] == 0


async def test_a_webhook_secret_without_its_url_is_a_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        PIPELINE,
        params={"group_id": GROUP},
        headers={**headers("alice"), "X-Notify-Secret": SECRET},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["header", "x-notify-secret"]
    assert (await client.get(f"{API}/jobs", headers=headers("alice"))).json()["total"] == 0
    assert (await client.post(PIPELINE, params={"group_id": GROUP})).status_code == 401
