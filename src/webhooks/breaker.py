"""Circuit breakers of webhook receivers: one per owner and receiver host, shared through Redis.

An owner's receiver host (`host:port`) that keeps failing (network errors, timeouts, 5xx:
`NOTIFY_BREAKER_FAILURES` attempts in a row) is not called for `NOTIFY_BREAKER_COOLDOWN` seconds;
the owner's webhook jobs for that host wait without spending a try, and one probe after the
cool-down closes or re-opens the circuit. Circuits are per owner as well as per host: a user
whose own URL fails (even a path on a host others use too) opens only their own circuit. Keys
hold a hash of owner and host, never either; the health shows how many circuits are open, not
which hosts (it needs no credential).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from src.arq.schemas import CircuitBreakerHealth
from src.breakers import KEY_PREFIX, CircuitBreaker, CircuitOpen, Ticket, group_snapshot
from src.webhooks import metrics
from src.webhooks.config import NotificationSettings
from src.webhooks.exceptions import WebhookHostUnavailable

if TYPE_CHECKING:
    from src.arq.service import ArqService

HEALTH_NAME = "webhooks"
CIRCUIT_PREFIX = KEY_PREFIX + "webhook:"
# The index of the open (and half-open) circuits of all owners and hosts, for the health.
GROUP = KEY_PREFIX + "webhooks:open"


class HostCircuit:
    """One owner's circuit of one receiver host (`target`: `scheme://host:port`, what refusals
    name), or none: every call goes through."""

    def __init__(self, breaker: CircuitBreaker | None, target: str) -> None:
        self.breaker = breaker
        self.target = target

    async def admit(self) -> Ticket:
        """Leave for one attempt; `WebhookHostUnavailable` while the circuit refuses."""
        if self.breaker is None:
            return Ticket()
        try:
            return await self.breaker.admit()
        except CircuitOpen as refusal:
            metrics.CIRCUIT_REFUSALS.inc()
            raise WebhookHostUnavailable(refusal.reason, retry_after=refusal.retry_after) from None

    async def settle(self, ticket: Ticket, *, failed: bool) -> bool:
        """The attempt failed (network, timeout, 5xx) or got an answer; True if this failure
        opened the circuit."""
        if self.breaker is None:
            return False
        if not failed:
            await self.breaker.succeeded(ticket)
            return False
        settled = await self.breaker.failed(ticket)
        if settled.opened:
            metrics.CIRCUITS_OPENED.inc()
        return settled.opened

    async def release(self, ticket: Ticket) -> None:
        """The attempt said nothing about the host (refused by the address guard)."""
        if self.breaker is not None:
            await self.breaker.release(ticket)


class HostCircuits:
    """The circuits of one owner's (`scope`'s) receiver hosts."""

    def __init__(self, redis: Redis, settings: NotificationSettings, *, scope: str) -> None:
        self.redis = redis
        self.settings = settings
        self.scope = scope

    def circuit(self, host: str, port: int, target: str) -> HostCircuit:
        """The circuit of `host:port` (None inside with NOTIFY_BREAKER_FAILURES=0)."""
        if self.settings.breaker_failures == 0:
            return HostCircuit(None, target)
        digest = hashlib.sha256(f"{self.scope}\x00{host}:{port}".encode()).hexdigest()[:32]
        breaker = CircuitBreaker(
            self.redis,
            name=f"webhook receiver {target}",
            key=CIRCUIT_PREFIX + digest,
            failures=self.settings.breaker_failures,
            cooldown=self.settings.breaker_cooldown,
            # An attempt takes NOTIFY_TIMEOUT at most, and as long again to read the answer.
            probe_lease=2 * self.settings.timeout + 10,
            group=GROUP,
            member=digest,
        )
        return HostCircuit(breaker, target)


async def read_health(redis: Redis) -> list[CircuitBreakerHealth]:
    """The webhook circuits as one group for the health details: its worst state and how many
    are open or half-open."""
    group = await group_snapshot(redis, GROUP)
    return [
        CircuitBreakerHealth(
            name=HEALTH_NAME,
            state=group.state,
            open_until=group.latest_until if group.open else None,
            circuits=group.open + group.half_open,
        )
    ]


def install(service: ArqService) -> None:
    """Show the webhook circuits in `service`'s health details."""
    service.add_circuit_breakers(lambda: read_health(service.redis))
