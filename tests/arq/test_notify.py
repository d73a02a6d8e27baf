"""Completion webhooks: `notify_url` on enqueue, sent by a `send_notification` job at the end."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq.config import ArqSettings
from src.arq.models import JobRecord
from src.arq.service import ArqService
from src.webhooks.completion import dispatch_notifications
from src.webhooks.signing import verify
from tests.arq.helpers import API, enqueue, status, wait_for
from tests.conftest import WorkerHandle, headers
from tests.webhooks.test_notifications import Receiver, Reply, receiver  # noqa: F401 (fixture)

SECRET = "a-completion-webhook-secret"


@pytest.fixture
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_ALLOW_HOSTS", "127.0.0.1/32")
    monkeypatch.setenv("NOTIFY_BACKOFF", "0.01")


async def delivered(receiver: Receiver, count: int = 1, timeout: float = 10.0) -> list[Any]:  # noqa: F811
    """The JSON bodies the receiver got, once it has `count` of them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while len(receiver.requests) < count:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{len(receiver.requests)} webhook(s) arrived, not {count}")
        await asyncio.sleep(0.02)
    return [json.loads(request.body) for request in receiver.requests]


async def notification_of(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """The finished `send_notification` job of a job, as its owner sees it."""
    deadline = asyncio.get_running_loop().time() + 10
    while (body := await status(client, job_id))["notification_job_id"] is None:
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.02)
    return await wait_for(client, body["notification_job_id"])


async def notify_jobs(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    async with sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).where(JobRecord.function == "send_notification")
        )
    return int(count or 0)


async def test_a_finished_job_posts_its_result_signed(
    client: httpx.AsyncClient,
    receiver: Receiver,  # noqa: F811
    allow_loopback: None,
    worker_handle: WorkerHandle,
    service: ArqService,
    sessionmaker: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await worker_handle.start()
    response = await enqueue(
        client, "add", kwargs={"a": 2, "b": 3}, notify_url=receiver.url, notify_secret=SECRET
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    done = await wait_for(client, job_id)
    assert done["status"] == "complete"
    assert done["notify_url"] == receiver.url
    assert SECRET not in json.dumps(done)

    (body,) = await delivered(receiver)
    assert body["event"] == "job.finished"
    assert body["job_id"] == job_id
    assert body["function"] == "add"
    assert body["status"] == "complete"
    assert body["result"] == {"sum": 5}
    assert datetime.fromisoformat(body["finished_at"]) == datetime.fromisoformat(
        done["finished_at"]
    )
    request = receiver.requests[0]
    assert verify(
        request.body,
        SECRET,
        request.headers["x-signature"],
        request.headers["x-signature-timestamp"],
    )

    # The owner sees the notification job and the code the receiver answered.
    notification = await notification_of(client, job_id)
    assert notification["status"] == "complete", notification
    assert notification["result"]["status_code"] == 200
    assert (await status(client, job_id))["notification_job_id"] == notification["job_id"]
    # Someone else sees neither.
    other = await client.get(f"{API}/status/{notification['job_id']}", headers=headers("bob"))
    assert other.status_code == 404

    # A later sweep finds nothing owed: one ending, one webhook.
    assert await dispatch_notifications(service) == []
    await asyncio.sleep(0.2)
    assert len(receiver.requests) == 1
    assert await notify_jobs(sessionmaker) == 1
    assert SECRET not in caplog.text


async def test_a_failed_job_posts_its_error(
    client: httpx.AsyncClient,
    receiver: Receiver,  # noqa: F811
    allow_loopback: None,
    worker: Any,
) -> None:
    response = await enqueue(
        client, "fail", kwargs={"message": "it broke"}, notify_url=f"{receiver.url}?k=1"
    )
    job_id = response.json()["job_id"]
    assert (await wait_for(client, job_id))["status"] == "failed"
    (body,) = await delivered(receiver)
    assert body["status"] == "failed"
    assert body["error"]["type"] == "ValueError"
    assert body["error"]["message"] == "it broke"
    assert "result" not in body
    assert "x-signature" not in receiver.requests[0].headers  # no secret, no signature


async def test_an_abort_before_start_is_notified(
    client: httpx.AsyncClient,
    receiver: Receiver,  # noqa: F811
    allow_loopback: None,
    worker_handle: WorkerHandle,
) -> None:
    response = await enqueue(
        client, "sleep", kwargs={"seconds": 0}, defer_by=600, notify_url=receiver.url
    )
    job_id = response.json()["job_id"]
    aborted = await client.delete(f"{API}/abort/{job_id}", headers=headers("alice"))
    assert aborted.json()["status"] == "aborted"
    # Queued by the API at once; a worker sends it.
    assert aborted.json()["notification_job_id"] is not None
    await worker_handle.start()
    (body,) = await delivered(receiver)
    assert body["job_id"] == job_id
    assert body["status"] == "aborted"
    assert "aborted by alice" in body["error"]["message"]


async def test_a_retried_job_notifies_each_ending(
    client: httpx.AsyncClient,
    receiver: Receiver,  # noqa: F811
    allow_loopback: None,
    worker: Any,
) -> None:
    response = await enqueue(client, "fail", notify_url=receiver.url)
    job_id = response.json()["job_id"]
    await wait_for(client, job_id)
    first = (await notification_of(client, job_id))["job_id"]
    retried = await client.post(f"{API}/retry/{job_id}", headers=headers("alice"))
    assert retried.status_code == 202, retried.text
    assert retried.json()["notification_job_id"] is None
    await wait_for(client, job_id, statuses=("failed",))
    second = (await notification_of(client, job_id))["job_id"]
    assert second != first
    bodies = await delivered(receiver, 2)
    assert [body["job_id"] for body in bodies] == [job_id, job_id]


async def test_a_refused_destination_fails_the_webhook_not_the_job(
    client: httpx.AsyncClient, worker: Any
) -> None:
    response = await enqueue(client, "add", kwargs={"a": 1}, notify_url="http://10.0.0.5/hook")
    job_id = response.json()["job_id"]
    assert (await wait_for(client, job_id))["status"] == "complete"
    notification = await notification_of(client, job_id)
    assert notification["status"] == "failed"
    assert "private address" in notification["error"]["message"]
    assert (await status(client, job_id))["status"] == "complete"


async def insert_finished(
    sessionmaker: async_sessionmaker[AsyncSession], job_id: str, url: str
) -> None:
    """A job whose ending is on record but whose webhook was never queued (a crash between)."""
    now = datetime.now(UTC)
    async with sessionmaker.begin() as session:
        session.add(
            JobRecord(
                job_id=job_id,
                function="add",
                queue_name="arq:queue",
                args={"a": 1, "b": 1},
                owner="alice",
                priority="normal",
                status="complete",
                progress=100,
                tries=1,
                enqueued_at=now,
                scheduled_for=now,
                started_at=now,
                finished_at=now,
                result={"sum": 2},
                notify_url=url,
            )
        )


async def test_concurrent_sweeps_queue_one_webhook(
    client: httpx.AsyncClient,
    receiver: Receiver,  # noqa: F811
    allow_loopback: None,
    service: ArqService,
    worker_handle: WorkerHandle,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await insert_finished(sessionmaker, "crashed-1", receiver.url)
    served = await asyncio.gather(*(dispatch_notifications(service) for _ in range(4)))
    assert ["crashed-1"] in served
    assert await notify_jobs(sessionmaker) == 1
    await worker_handle.start()
    (body,) = await delivered(receiver)
    assert body["job_id"] == "crashed-1"
    assert body["result"] == {"sum": 2}
    await asyncio.sleep(0.2)
    assert len(receiver.requests) == 1


class TestWorkerSweep:
    @pytest.fixture
    def arq_settings(self, arq_settings: ArqSettings) -> ArqSettings:
        return arq_settings.model_copy(update={"reconcile_interval": 0.2})

    async def test_the_worker_sends_what_a_crash_left_owed(
        self,
        client: httpx.AsyncClient,
        receiver: Receiver,  # noqa: F811
        allow_loopback: None,
        worker: Any,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        await insert_finished(sessionmaker, "crashed-2", receiver.url)
        (body,) = await delivered(receiver)
        assert body["job_id"] == "crashed-2"
        assert (await status(client, "crashed-2"))["notification_job_id"] is not None


async def test_the_python_api_takes_a_webhook(
    client: httpx.AsyncClient,
    receiver: Receiver,  # noqa: F811
    allow_loopback: None,
    service: ArqService,
    worker: Any,
) -> None:
    job = await service.enqueue_job(
        "add", a=4, _notify_url=receiver.url, _notify_secret=SECRET, _principal=_alice()
    )
    (body,) = await delivered(receiver)
    assert body["job_id"] == job.job_id
    assert body["result"] == {"sum": 4}


def _alice() -> Any:
    from src.auth.schemas import Principal, Role

    return Principal(owner="alice", role=Role.USER)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"notify_url": "ftp://example.org/hook"}, "notify_url"),
        ({"notify_url": "https:///no-host"}, "notify_url"),
        ({"notify_url": "https://user:pw@example.org/hook"}, "notify_url"),
        ({"notify_url": "https://example.org:99999/hook"}, "notify_url"),
        ({"notify_url": "https://example.org/" + "a" * 2048}, "notify_url"),
        ({"notify_url": "https://example.org/h", "notify_secret": "short"}, "notify_secret"),
        ({"notify_secret": SECRET}, "notify_url"),
    ],
)
async def test_bad_webhooks_are_refused_at_enqueue(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], body: Any, field: str
) -> None:
    response = await enqueue(client, "add", kwargs={"a": 1}, **body)
    assert response.status_code == 422, response.text
    assert field in response.text
    assert SECRET not in response.text
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(JobRecord)) == 0


async def test_domain_endpoints_take_the_webhook_in_headers(
    client: httpx.AsyncClient,
    receiver: Receiver,  # noqa: F811
    allow_loopback: None,
    worker: Any,
) -> None:
    response = await client.post(
        "/api/v1/comments/report/async",
        params={"group_id": 5},
        headers={**headers("alice"), "X-Notify-Url": receiver.url, "X-Notify-Secret": SECRET},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["data"]["job_id"]
    (body,) = await delivered(receiver)
    assert (body["job_id"], body["function"], body["status"]) == (
        job_id,
        "generate_report",
        "complete",
    )
    assert body["result"]["download_url"] == f"/api/v1/comments/reports/{job_id}"
    request = receiver.requests[0]
    assert verify(
        request.body,
        SECRET,
        request.headers["x-signature"],
        request.headers["x-signature-timestamp"],
    )


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"X-Notify-Url": "ftp://example.org/hook"}, "x-notify-url"),
        ({"X-Notify-Url": "https://example.org/h", "X-Notify-Secret": "short"}, "x-notify-secret"),
        ({"X-Notify-Secret": SECRET}, "x-notify-secret"),
    ],
)
async def test_domain_endpoints_refuse_bad_webhooks(
    client: httpx.AsyncClient, extra: dict[str, str], field: str
) -> None:
    response = await client.post(
        "/api/v1/comments/parse/vk/async",
        params={"group_id": 1},
        headers={**headers("alice"), **extra},
    )
    assert response.status_code == 422, response.text
    assert field in response.text
    assert SECRET not in response.text
