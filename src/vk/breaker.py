"""VK's circuit breaker: one circuit for the VK API, shared by every worker through Redis.

A failure is what says VK itself is in trouble: a network error, a timeout, an HTTP 5xx, an
answer that is not VK's JSON, VK's errors 1 (unknown) and 10 (internal). Anything else VK answers
(too many requests, a method's limit, a bad parameter, access denied) is an answer and closes the
circuit; the rate limiter's own refusal (`VKThrottled`) and a missing token say nothing about VK.
`VK_BREAKER_FAILURES` failures in a row open the circuit for `VK_BREAKER_COOLDOWN` seconds: the
client then raises `VKUnavailable` without sending anything, and jobs wait without spending a
try (`src.comments.tasks`).
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Self

from redis.asyncio import Redis

from src.arq.schemas import CircuitBreakerHealth
from src.breakers import (
    KEY_PREFIX,
    CircuitBreaker,
    CircuitOpen,
    CircuitState,
    Ticket,
    circuit_snapshot,
)
from src.vk import metrics
from src.vk.config import VKSettings
from src.vk.exceptions import (
    VKAuthError,
    VKError,
    VKRateLimitReached,
    VKRetryableError,
    VKThrottled,
    VKUnavailable,
)

if TYPE_CHECKING:
    from src.arq.service import ArqService

NAME = "VK"
HEALTH_NAME = "vk"
# One circuit for VK (not per token: an outage is VK's, whoever calls).
CIRCUIT_KEY = KEY_PREFIX + "vk"
# VK's "unknown error" and "internal server error".
OUTAGE_CODES = frozenset({1, 10})


def is_outage(error: VKError) -> bool:
    """Whether `error` says VK is failing (rather than answering something unwelcome)."""
    if isinstance(error, VKThrottled | VKRateLimitReached | VKUnavailable):
        return False
    if error.code is not None:
        return error.code in OUTAGE_CODES
    return isinstance(error, VKRetryableError) and not metrics.is_too_many_requests(error)


def _says_nothing(error: BaseException) -> bool:
    """Nothing reached VK: the limiter refused, the token is missing, or something else broke."""
    if isinstance(error, VKThrottled):
        return True
    if isinstance(error, VKAuthError):
        return error.code is None
    return not isinstance(error, VKError)


def vk_breaker(redis: Redis, settings: VKSettings) -> CircuitBreaker | None:
    """The VK circuit with `settings`' threshold and cool-down; None with VK_BREAKER_FAILURES=0."""
    if settings.breaker_failures == 0:
        return None
    return CircuitBreaker(
        redis,
        name=NAME,
        key=CIRCUIT_KEY,
        failures=settings.breaker_failures,
        cooldown=settings.breaker_cooldown,
        # A probe is one request: it may take VK_TIMEOUT, and a slot of the rate limiter.
        probe_lease=2 * settings.timeout + 10,
    )


class CircuitRequest:
    """One request under the circuit: `async with` asks for leave (`VKUnavailable` if refused)
    and reports how the request went; `opened` tells whether its failure opened the circuit."""

    def __init__(self, breaker: CircuitBreaker | None, method: str) -> None:
        self.breaker = breaker
        self.method = method
        self.ticket = Ticket()
        self.opened = False

    async def __aenter__(self) -> Self:
        if self.breaker is None:
            return self
        try:
            self.ticket = await self.breaker.admit()
        except CircuitOpen as refusal:
            metrics.CIRCUIT_REFUSALS.inc()
            metrics.CIRCUIT.saw(CircuitState.OPEN, refusal.until)
            raise VKUnavailable(
                refusal.reason, retry_after=refusal.retry_after, method=self.method
            ) from None
        if self.ticket.probe:
            metrics.CIRCUIT.saw(CircuitState.HALF_OPEN)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.breaker is None:
            return
        if exc is not None and not isinstance(exc, Exception):
            return  # cancelled: a probe's lease runs out by itself
        if exc is not None and _says_nothing(exc):
            await self.breaker.release(self.ticket)
            return
        if isinstance(exc, VKError) and is_outage(exc):
            settled = await self.breaker.failed(self.ticket)
            self.opened = settled.opened
            if settled.opened:
                metrics.CIRCUIT_OPENED.inc()
            metrics.CIRCUIT.saw(settled.state, settled.until)
        else:
            settled = await self.breaker.succeeded(self.ticket)
            metrics.CIRCUIT.saw(settled.state, settled.until)


async def read_health(redis: Redis) -> list[CircuitBreakerHealth]:
    """The VK circuit for the health details (settings-free: the API need not read VK_*)."""
    snapshot = await circuit_snapshot(redis, CIRCUIT_KEY)
    return [
        CircuitBreakerHealth(
            name=HEALTH_NAME,
            state=snapshot.state,
            failures=snapshot.failures,
            open_until=snapshot.open_until,
        )
    ]


def install(service: ArqService) -> None:
    """Show the VK circuit in `service`'s health details."""
    service.add_circuit_breakers(lambda: read_health(service.redis))
