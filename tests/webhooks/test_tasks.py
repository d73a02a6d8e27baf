"""`send_notification` through the job API and a real worker, to a local receiver."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from src.webhooks.signing import verify
from tests.arq.helpers import enqueue, wait_for
from tests.conftest import WorkerHandle
from tests.webhooks.test_notifications import Receiver, Reply, receiver  # noqa: F401 (fixture)

SECRET = "a-webhook-secret-of-some-length"


@pytest.fixture
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_ALLOW_HOSTS", "127.0.0.1/32")
    monkeypatch.setenv("NOTIFY_BACKOFF", "0.01")


async def test_webhook_is_delivered_signed_and_its_code_recorded(
    client: httpx.AsyncClient,
    receiver: Receiver,  # noqa: F811
    allow_loopback: None,
    worker_handle: WorkerHandle,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await worker_handle.start()
    receiver.reply(Reply(status=503), Reply(status=202))
    response = await enqueue(
        client,
        "send_notification",
        kwargs={
            "url": f"{receiver.url}/hook",
            "template": "ping",
            "secret": SECRET,
            "context": {"message": "hello"},
        },
    )
    done = await wait_for(client, response.json()["job_id"])
    assert done["status"] == "complete", done
    assert done["result"]["status_code"] == 202
    assert done["result"]["attempts"] == 2
    request = receiver.requests[-1]
    assert request.path.endswith("/hook")
    assert verify(
        request.body,
        SECRET,
        request.headers["x-signature"],
        request.headers["x-signature-timestamp"],
    )
    assert SECRET not in caplog.text


async def test_private_address_is_refused_and_4xx_not_retried(
    client: httpx.AsyncClient,
    receiver: Receiver,  # noqa: F811
    worker_handle: WorkerHandle,
    allow_loopback: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await worker_handle.start()
    refused = await enqueue(
        client, "send_notification", kwargs={"url": "http://10.0.0.5/hook", "payload": {"a": 1}}
    )
    done = await wait_for(client, refused.json()["job_id"])
    assert done["status"] == "failed"
    assert "private address" in done["error"]["message"]
    receiver.reply(Reply(status=404))
    rejected = await enqueue(
        client, "send_notification", kwargs={"url": receiver.url, "payload": {"a": 1}}
    )
    done = await wait_for(client, rejected.json()["job_id"])
    assert done["status"] == "failed"
    assert done["tries"] == 1
    assert len(receiver.requests) == 1


async def test_notification_arguments_are_checked_at_enqueue(client: httpx.AsyncClient) -> None:
    cases: list[dict[str, Any]] = [
        {"url": "ftp://example.org/x", "payload": {}},
        {"url": "https://example.org/x"},
        {"url": "https://example.org/x", "payload": {}, "template": "ping"},
        {"url": "https://example.org/x", "template": "nope"},
        {"url": "https://example.org/x", "payload": {}, "secret": "short"},
    ]
    for kwargs in cases:
        response = await enqueue(client, "send_notification", kwargs=kwargs)
        assert response.status_code == 422, (kwargs, response.text)
