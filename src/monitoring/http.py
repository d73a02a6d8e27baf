"""HTTP metrics of the API: requests by route template, method and status, and their latency.

A pure ASGI middleware, outermost, so that answers given before routing (401, 413 from the
request guard) are counted too. Labels are bounded: the route's template (`/api/v1/arq/status/
{job_id}`, never the path a client sent), a known method, the status code.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "vkp_http_requests",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "vkp_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template and method",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"


class HttpMetrics:
    """Counts every HTTP request the app answers (`routes`: the app's, to name early answers)."""

    def __init__(self, app: ASGIApp, *, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        self._templates: list[tuple[re.Pattern[str], str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before starting a response

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            route = self._route(scope)
            HTTP_REQUESTS.labels(route, method, str(status)).inc()
            HTTP_DURATION.labels(route, method).observe(time.perf_counter() - started)

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path
        # Answered before routing (the request guard): find the route it was meant for.
        if self._templates is None:
            self._templates = list(_leaf_routes(self.routes))
        requested = scope.get("path", "")
        for pattern, template in self._templates:
            if pattern.match(requested):
                return template
        return UNMATCHED


def _leaf_routes(routes: Iterable[Any]) -> Iterator[tuple[re.Pattern[str], str]]:
    """(path pattern, template) of every route, included routers walked into."""
    for route in routes:
        pattern, template = getattr(route, "path_regex", None), getattr(route, "path", None)
        if isinstance(pattern, re.Pattern) and isinstance(template, str):
            yield pattern, template
        nested = getattr(route, "routes", None)
        if nested is None and hasattr(route, "original_router"):
            nested = route.original_router.routes  # FastAPI's included routers
        if nested is not None:
            yield from _leaf_routes(nested)
