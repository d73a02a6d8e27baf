"""Prometheus metrics of the VK API client: requests by method and outcome, VK's error codes,
the time spent waiting for the rate limit, and its circuit breaker.

Every label has a fixed set of values, whatever VK or a caller sends: `method` is one of the
methods the client calls (anything else counts as "other"), `outcome` one of `Outcome`, `code`
one of the error codes the client knows (others count as "other"). A request is one HTTP request
to VK: an `execute` of 25 calls is one request; the errors of its calls count in
`vkp_vk_errors_total` all the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from src.breakers import CircuitState
from src.vk.exceptions import ERROR_CLASSES, VKError

OTHER = "other"
# The methods the client calls (`src.vk.calls`, `VKClient`); `execute` carries batches of them.
METHODS = frozenset(
    {"execute", "wall.get", "wall.getComments", "groups.getById", "utils.resolveScreenName"}
)
# The codes the client maps to an error class (`src.vk.exceptions`).
ERROR_CODES = frozenset(ERROR_CLASSES)
# VK's "too many requests per second"; an HTTP 429 says the same.
TOO_MANY_REQUESTS = 6


class Outcome(StrEnum):
    """How one HTTP request to VK ended."""

    OK = "ok"  # VK answered with a `response`
    VK_ERROR = "vk_error"  # VK answered with an `error` (its code counts in the errors)
    HTTP_ERROR = "http_error"  # a 4xx or 5xx status
    BAD_RESPONSE = "bad_response"  # a 2xx that is not VK's JSON (neither response nor error)
    TIMEOUT = "timeout"  # no answer within VK_TIMEOUT
    NETWORK_ERROR = "network_error"  # the connection failed


class WaitReason(StrEnum):
    """Why the client waited before a request."""

    LIMITER = "limiter"  # for a slot of the shared rate limiter (every request; mostly ~0)
    TOO_MANY_REQUESTS = "too_many_requests"  # a backoff after VK's error 6 or an HTTP 429


REQUESTS = Counter(
    "vkp_vk_requests",
    "HTTP requests to the VK API, by method and outcome",
    ["method", "outcome"],
)
ERRORS = Counter(
    "vkp_vk_errors",
    "Errors VK reported, by error code (including those of calls inside execute)",
    ["code"],
)
RATE_LIMIT_WAIT = Histogram(
    "vkp_vk_rate_limit_wait_seconds",
    "Time the client waited before a VK request: for the rate limiter, or backing off after "
    "VK said too many requests",
    ["reason"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

CIRCUIT_OPENED = Counter(
    "vkp_vk_circuit_opened",
    "Times this process opened the VK circuit (failed requests in a row, or a failed probe)",
)
CIRCUIT_REFUSALS = Counter(
    "vkp_vk_circuit_refusals",
    "VK requests not sent because the circuit was open (or half-open with a probe under way)",
)


class CircuitView(Collector):
    """The VK circuit as this process last saw it (each request looks), read at scrape time:
    `vkp_vk_circuit_state{state}` is 1 for that state; an open circuit whose cool-down has
    passed shows as half_open. Every process shares the circuit: take the max over them."""

    def __init__(self) -> None:
        self.state = CircuitState.CLOSED
        self.until = 0.0  # when an open circuit's cool-down ends (unix seconds)

    def saw(self, state: CircuitState, until: datetime | None = None) -> None:
        self.state = state
        self.until = until.timestamp() if until is not None else 0.0

    def collect(self) -> Iterator[Metric]:
        state = self.state
        if state is CircuitState.OPEN and time.time() >= self.until:
            state = CircuitState.HALF_OPEN
        family = GaugeMetricFamily(
            "vkp_vk_circuit_state",
            "The VK circuit breaker's state as this process last saw it (1 for that state)",
            labels=["state"],
        )
        for each in CircuitState:
            family.add_metric([each.value], 1.0 if each is state else 0.0)
        yield family


CIRCUIT = CircuitView()
REGISTRY.register(CIRCUIT)

# Every series exists from the start (at 0), so a rate over it is defined before the first event.
for _method in (*METHODS, OTHER):
    for _outcome in Outcome:
        REQUESTS.labels(_method, _outcome)
for _code in (*sorted(ERROR_CODES), OTHER):
    ERRORS.labels(str(_code))
for _reason in WaitReason:
    RATE_LIMIT_WAIT.labels(_reason)


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


def code_label(code: int | None) -> str:
    return str(code) if code in ERROR_CODES else OTHER


def count_request(method: str, outcome: Outcome) -> None:
    """One HTTP request to VK ended so."""
    REQUESTS.labels(method_label(method), outcome).inc()


def count_failed_request(method: str, http_status: int, error: VKError) -> None:
    """An answer VK sent that stands for `error`: an HTTP error, VK's error or neither."""
    if http_status >= 400:
        outcome = Outcome.HTTP_ERROR
    elif error.code is not None:
        outcome = Outcome.VK_ERROR
        count_error(error.code)
    else:
        outcome = Outcome.BAD_RESPONSE
    count_request(method, outcome)


def count_error(code: int | None) -> None:
    """VK reported an error with this code (on a request or a call inside `execute`)."""
    ERRORS.labels(code_label(code)).inc()


def is_too_many_requests(error: VKError) -> bool:
    """VK asked to slow down: error 6, or an HTTP 429 (`src.vk.responses` names its status)."""
    if error.code is None:
        return error.vk_message == "HTTP 429"
    return error.code == TOO_MANY_REQUESTS


def observe_wait(reason: WaitReason, seconds: float) -> None:
    """The client waited `seconds` before a request, for `reason`."""
    RATE_LIMIT_WAIT.labels(reason).observe(max(seconds, 0.0))
