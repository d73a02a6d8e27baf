"""Request ids and the access log: a pure ASGI middleware, outside every other one.

Each request gets an id: the client's `X-Request-ID` when it is safe to repeat (1-64 characters
of `[A-Za-z0-9._:-]`), else a new one (uuid4 hex). The id is bound to the request's log context
(`src.logs`), so every line logged for the request carries it and a job queued by it records it
(`arq_jobs.request_id`, which its worker's lines carry too); it is returned in the response's
`X-Request-ID`, errors included, and the request ends with one `src.access` line: method, route
template (the path when no route matched), status and duration.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from urllib.parse import quote

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src import logs

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# What of an unmatched path reaches the access line (it is the client's text).
_PATH_MAX = 256

access_logger = logging.getLogger("src.access")


def accepted_request_id(value: str | None) -> str | None:
    """`value` if it is a request id safe to log and repeat, else None."""
    if value is not None and _SAFE_REQUEST_ID.fullmatch(value):
        return value
    return None


def request_id_header() -> dict[str, str]:
    """The `X-Request-ID` header of the current request, for responses made outside the
    middleware (the app's 500, written by Starlette's outermost error middleware)."""
    value = logs.request_id()
    return {REQUEST_ID_HEADER: value} if value else {}


class RequestIdMiddleware:
    """Gives each request its id (log context, response header) and its access line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        presented = Headers(scope=scope).get(REQUEST_ID_HEADER)
        request_id = accepted_request_id(presented) or uuid.uuid4().hex
        token = logs.bind({"request_id": request_id})
        started = time.perf_counter()
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            failed = True
            status = status or 500
            raise
        finally:
            _log_access(scope, status, time.perf_counter() - started)
            # After an unhandled error the id stays bound: Starlette's error middleware, outside
            # this one, logs the error and answers the 500 next (the server's task for the
            # request ends after it).
            if not failed:
                logs.reset(token)


def _log_access(scope: Scope, status: int | None, seconds: float) -> None:
    route = scope.get("route")
    template = getattr(route, "path", None)
    path = template if isinstance(template, str) else _printable_path(scope.get("path", ""))
    method = str(scope.get("method", ""))[:16]
    duration_ms = round(seconds * 1000, 1)
    access_logger.info(
        "%s %s %s %.1f ms",
        method,
        path,
        status if status is not None else "-",
        duration_ms,
        extra={"method": method, "route": path, "status": status, "duration_ms": duration_ms},
    )


def _printable_path(path: str) -> str:
    """The client's path, percent-encoded where it is not plain text, and cut short."""
    return quote(path[:_PATH_MAX], safe="/:@-._~!$&'()*+,;=%")
