"""Webhook delivery: a signed JSON POST, retried in process with backoff on transient failures."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from src.webhooks import guard, metrics
from src.webhooks.breaker import HostCircuit, HostCircuits
from src.webhooks.config import NotificationSettings
from src.webhooks.exceptions import (
    AddressRefused,
    HostUnresolvable,
    InvalidWebhookPayload,
    WebhookFailed,
    WebhookPayloadTooLarge,
    WebhookRejected,
)
from src.webhooks.guard import AllowList, host_port, parse_url, redact_url
from src.webhooks.signing import signature_headers
from src.webhooks.transport import create_webhook_client, peer_guard

logger = logging.getLogger(__name__)

EXCERPT_CHARS = 500
# UTF-8 spends at most 4 bytes a character: enough bytes for the excerpt, never the whole body.
_EXCERPT_BYTES = 4 * EXCERPT_CHARS


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """A delivered webhook: the receiver's status, attempts made, time taken, answer's start."""

    status_code: int
    attempts: int
    duration_ms: int
    response_excerpt: str


async def send_webhook(
    url: str,
    payload: dict[str, Any],
    *,
    secret: str | None,
    settings: NotificationSettings,
    http: httpx.AsyncClient | None = None,
    circuits: HostCircuits | None = None,
) -> DeliveryReport:
    """POST `payload` as signed JSON to `url`, retrying transient failures in process.

    Retried: 5xx, 429 and network errors or timeouts, with doubling, jittered backoff (a
    Retry-After up to `retry_after_max` is waited out; a longer one ends the send at once, its
    value in `WebhookFailed.retry_after`). Raises `WebhookRejected` at once for a 4xx or a
    redirect (never followed), `AddressRefused` for a refused destination, `WebhookFailed`
    when the attempts run out. `http` defaults to `create_webhook_client(settings)`; a client
    of your own should come from there too (see `peer_guard` for what else is covered).
    With `circuits` (the owner's, `src.webhooks.breaker`) each attempt asks the host's circuit
    first: `WebhookHostUnavailable` while it is open; a failure that opens it ends the send
    with `WebhookFailed`, its `retry_after` the cool-down.
    """
    try:
        body = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise InvalidWebhookPayload(f"webhook payload is not JSON-serialisable: {exc}") from None
    if len(body) > settings.max_payload_bytes:
        raise WebhookPayloadTooLarge(len(body), settings.max_payload_bytes)
    parsed = parse_url(url)
    host, port = host_port(parsed)
    target = redact_url(parsed)
    allow = AllowList.from_settings(settings)
    circuit = circuits.circuit(host, port, target) if circuits else HostCircuit(None, target)
    secret = secret or None
    client = http or create_webhook_client(settings)
    started = time.monotonic()
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    attempt = 0
    opened = False
    try:
        for attempt in range(1, settings.max_attempts + 1):
            status, error, retry_after = None, None, None
            ticket = await circuit.admit()
            try:
                allow.check(host, await guard.resolve_host(host, port))
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": settings.user_agent,
                }
                if secret is not None:
                    headers |= signature_headers(body, secret, int(time.time()))
                request = client.build_request(
                    "POST",
                    parsed,
                    content=body,
                    headers=headers,
                    timeout=settings.timeout,
                    extensions={"trace": peer_guard(host, allow)},
                )
                # The whole exchange has a deadline too: httpx's timeouts are per read, so a
                # receiver dripping a byte at a time would otherwise hold the send forever.
                async with asyncio.timeout(settings.timeout):
                    response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    excerpt = await _excerpt(response, settings.timeout)
                finally:
                    await response.aclose()
            except HostUnresolvable as exc:
                error = exc.detail
            except (TimeoutError, httpx.TimeoutException):
                error = f"no answer within {settings.timeout:g} s"
            except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, AddressRefused):
                await circuit.release(ticket)
                raise
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                status = response.status_code
            # The host answered (any status but a 5xx), or it failed: its circuit hears which.
            opened = await circuit.settle(ticket, failed=status is None or status >= 500)
            if status is not None:
                if 200 <= status < 300:
                    elapsed = time.monotonic() - started
                    metrics.record_delivery(metrics.Outcome.DELIVERED, elapsed)
                    duration_ms = round(elapsed * 1000)
                    logger.info(
                        "webhook to %s delivered: %d after %d attempt(s), %d ms",
                        target,
                        status,
                        attempt,
                        duration_ms,
                    )
                    return DeliveryReport(status, attempt, duration_ms, excerpt)
                if status != 429 and status < 500:
                    rejection = _rejection(response, target, excerpt, attempt)
                    metrics.record_delivery(metrics.Outcome.REJECTED, time.monotonic() - started)
                    raise rejection
                retry_after = _retry_after(response)
                error = f"answered {status}" + (f": {excerpt[:200]}" if excerpt else "")
            logger.warning("webhook to %s, attempt %d failed: %s", target, attempt, error)
            if opened:
                # The host failed too often in a row: its circuit is open, no more attempts.
                retry_after = settings.breaker_cooldown
                break
            if retry_after is not None and retry_after > settings.retry_after_max:
                break
            if attempt < settings.max_attempts:
                await asyncio.sleep(
                    retry_after if retry_after is not None else _backoff(attempt, settings)
                )
    except AddressRefused:
        metrics.record_delivery(metrics.Outcome.REFUSED, time.monotonic() - started)
        raise
    finally:
        if http is None:
            await client.aclose()
    metrics.record_delivery(metrics.Outcome.FAILED, time.monotonic() - started)
    if opened:
        hint = f"; its circuit is open for {retry_after:g} s"
    elif retry_after is not None:
        hint = f"; receiver asks to retry in {retry_after:g} s"
    else:
        hint = ""
    raise WebhookFailed(
        f"webhook to {target} failed after {attempt} attempt(s): {error}{hint}",
        attempts=attempt,
        receiver_status=status,
        error=error,
        retry_after=retry_after,
    )


def _rejection(
    response: httpx.Response, target: str, excerpt: str, attempts: int
) -> WebhookRejected:
    status = response.status_code
    if 300 <= status < 400:
        location = response.headers.get("Location")
        try:
            where = f" to {redact_url(response.url.join(location))}" if location else ""
        except httpx.InvalidURL:
            where = ""
        detail = (
            f"webhook receiver at {target} answered {status}, a redirect{where}; "
            "redirects are not followed (they could lead to an internal address): "
            "configure the final URL"
        )
    else:
        detail = f"webhook receiver at {target} rejected the request with {status}" + (
            f": {excerpt[:200]}" if excerpt else ""
        )
    logger.warning("%s", detail)
    return WebhookRejected(detail, receiver_status=status, attempts=attempts)


async def _excerpt(response: httpx.Response, limit_s: float) -> str:
    """The start of the answer's body, read no further than needed (a body may be huge)."""
    data = bytearray()
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(limit_s):
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) >= _EXCERPT_BYTES:
                    break
    return data.decode("utf-8", "replace")[:EXCERPT_CHARS]


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds a 429/503's `Retry-After` asks for (a delay or an HTTP date), if any."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _backoff(attempt: int, settings: NotificationSettings) -> float:
    """Doubling delay after `attempt` failures, capped, with jitter (half fixed, half random)."""
    delay = min(settings.backoff * 2.0 ** (attempt - 1), settings.backoff_max)
    return delay / 2 + random.uniform(0, delay / 2)
