"""Prometheus metrics of outgoing webhooks: deliveries by outcome, and how long they took.

One delivery is one `send_webhook`, however many attempts it made. A payload that cannot be
sent at all (not JSON, too large, an invalid URL) is refused before any delivery and not
counted, nor is a send that the host's circuit breaker refused (it counts in the refusals). No
label holds a URL, a host or an owner.
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import Counter, Histogram


class Outcome(StrEnum):
    """How a delivery ended."""

    DELIVERED = "delivered"  # the receiver answered 2xx
    REJECTED = "rejected"  # a 4xx or a redirect: not retried
    FAILED = "failed"  # the attempts ran out on 5xx, 429, network errors or timeouts
    REFUSED = "refused"  # the address guard refused the destination: nothing was sent


DELIVERIES = Counter(
    "vkp_webhook_deliveries",
    "Webhook deliveries (one per send, however many attempts), by outcome",
    ["outcome"],
)
DELIVERY_SECONDS = Histogram(
    "vkp_webhook_delivery_seconds",
    "Time a webhook delivery took, retries and their backoffs included, by outcome",
    ["outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)

CIRCUITS_OPENED = Counter(
    "vkp_webhook_circuits_opened",
    "Times this process opened the circuit of a receiver host (failed attempts in a row, or a "
    "failed probe); circuits are per owner and host, neither is a label",
)
CIRCUIT_REFUSALS = Counter(
    "vkp_webhook_circuit_refusals",
    "Webhook sends not attempted because their host's circuit was open (the job waits)",
)

# Every series exists from the start (at 0), so a rate over it is defined before the first event.
for _outcome in Outcome:
    DELIVERIES.labels(_outcome)
    DELIVERY_SECONDS.labels(_outcome)


def record_delivery(outcome: Outcome, seconds: float) -> None:
    """A delivery ended with `outcome` after `seconds`."""
    DELIVERIES.labels(outcome).inc()
    DELIVERY_SECONDS.labels(outcome).observe(max(seconds, 0.0))
