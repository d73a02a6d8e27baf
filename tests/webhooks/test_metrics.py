"""Webhook delivery metrics, counted while `send_webhook` talks to a real receiver.

The registry is the process' own (`prometheus_client.REGISTRY`), shared by every test of the run:
each test compares the samples before and after what it does.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from src.webhooks.delivery import send_webhook
from src.webhooks.exceptions import (
    AddressRefused,
    WebhookFailed,
    WebhookPayloadTooLarge,
    WebhookRejected,
)
from tests.registry_samples import moved_since, registry_samples
from tests.webhooks.test_notifications import PAYLOAD, Receiver, Reply, notify_settings, serve

PREFIX = "vkp_webhook_"


def samples() -> dict[str, float]:
    """This process' webhook samples (`tests.registry_samples`)."""
    return registry_samples(PREFIX)


def changes(before: dict[str, float]) -> dict[str, float]:
    return moved_since(PREFIX, before)


def delivered(outcome: str, times: int = 1) -> dict[str, float]:
    """What `times` deliveries ending with `outcome` add."""
    return {
        f'vkp_webhook_deliveries_total{{outcome="{outcome}"}}': times,
        f'vkp_webhook_delivery_seconds_count{{outcome="{outcome}"}}': times,
    }


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serve(Receiver()) as running:
        yield running


async def test_a_delivery_counts_once_however_many_attempts(receiver: Receiver) -> None:
    receiver.reply(Reply(200), Reply(500), Reply(503), Reply(200))
    before = samples()
    await send_webhook(receiver.url, PAYLOAD, secret=None, settings=notify_settings())
    await send_webhook(receiver.url, PAYLOAD, secret=None, settings=notify_settings())
    assert len(receiver.requests) == 4
    assert changes(before) == delivered("delivered", 2)
    key = 'vkp_webhook_delivery_seconds_sum{outcome="delivered"}'
    assert 0 < samples()[key] - before[key] < 10


@pytest.mark.parametrize("reply", [Reply(404), Reply(302, headers={"Location": "/elsewhere"})])
async def test_4xx_and_redirects_are_rejected(receiver: Receiver, reply: Reply) -> None:
    receiver.reply(reply)
    before = samples()
    with pytest.raises(WebhookRejected):
        await send_webhook(receiver.url, PAYLOAD, secret=None, settings=notify_settings())
    assert changes(before) == delivered("rejected")


async def test_giving_up_is_a_failure(receiver: Receiver) -> None:
    receiver.reply(*[Reply(503)] * 3, Reply(429, headers={"Retry-After": "3600"}))
    before = samples()
    with pytest.raises(WebhookFailed):  # 5xx until the attempts run out
        await send_webhook(
            receiver.url, PAYLOAD, secret=None, settings=notify_settings(max_attempts=3)
        )
    with pytest.raises(WebhookFailed):  # asked to come back in an hour
        await send_webhook(receiver.url, PAYLOAD, secret=None, settings=notify_settings())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(WebhookFailed):  # nothing listens
        await send_webhook(
            f"http://127.0.0.1:{port}/hook", PAYLOAD, secret=None, settings=notify_settings()
        )
    assert changes(before) == delivered("failed", 3)


async def test_refused_destinations(receiver: Receiver) -> None:
    before = samples()
    for host in ("127.0.0.1", "localhost"):
        with pytest.raises(AddressRefused):
            await send_webhook(
                f"http://{host}:{receiver.port}/hook",
                PAYLOAD,
                secret=None,
                settings=notify_settings(allow_hosts=[]),
            )
    assert receiver.requests == []
    assert changes(before) == delivered("refused", 2)


async def test_a_payload_that_is_never_sent_is_not_a_delivery(receiver: Receiver) -> None:
    before = samples()
    with pytest.raises(WebhookPayloadTooLarge):
        await send_webhook(
            receiver.url,
            {"text": "x" * 200},
            secret=None,
            settings=notify_settings(max_payload_bytes=100),
        )
    assert changes(before) == {}


def test_every_outcome_exists_before_its_first_delivery() -> None:
    values = samples()
    for outcome in ("delivered", "rejected", "failed", "refused"):
        assert f'vkp_webhook_deliveries_total{{outcome="{outcome}"}}' in values
