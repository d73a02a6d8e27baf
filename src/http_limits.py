"""The request guard: authenticate from the headers, then bound the body while it is read.

FastAPI reads and parses a request's body before it solves the route's dependencies: without
this guard a caller with no credential gets a 422 for bad JSON (and learns the route's schema),
and anyone can make the API buffer and parse a body of any size. This pure ASGI middleware runs
before the app: a protected route answers 401 before a byte of the body is read, then a body
over `API_MAX_BODY_BYTES` is a 413 (declared by Content-Length, or counted as it streams), and
only then may the app answer 422 for what the body holds.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.auth.dependencies import api_key_header, bearer_scheme, get_principal
from src.exceptions import AppError, error_body

# Routes that answer without a credential: the health check and the API docs.
PUBLIC_PATHS: frozenset[str] = frozenset(
    {"/api/v1/arq/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}
)


class PayloadTooLarge(AppError):
    """The request body is larger than `API_MAX_BODY_BYTES`."""

    status_code = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is too large: at most {limit} bytes")


class RequestGuard:
    """Authenticates protected requests from their headers, then bounds every request's body.

    The principal it finds is kept in the request's state, where `get_principal` reuses it.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        public_paths: frozenset[str] = PUBLIC_PATHS,
        public_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.public_paths = public_paths
        # Paths under these check their callers themselves (the dashboard: its session cookie).
        self.public_prefixes = public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            path = _route_path(scope)
            if path not in self.public_paths and not path.startswith(self.public_prefixes):
                await _authenticate(scope)
            declared = _content_length(scope)
            if declared is not None and declared > self.max_body_bytes:
                raise PayloadTooLarge(self.max_body_bytes)
        except AppError as exc:
            # Nothing of the body has been read; the server discards it.
            await error_response(exc)(scope, receive, send)
            return
        await _BoundedBody(self.app, self.max_body_bytes)(scope, receive, send)


def error_response(exc: AppError) -> JSONResponse:
    """`exc` in the app's one error shape (as `src.main` writes it: this answers before the
    app's handlers are reached)."""
    return JSONResponse(
        status_code=exc.status_code,
        content=error_body(type(exc).__name__, exc.detail, **exc.extra),
        headers=exc.headers,
    )


class _BoundedBody:
    """One request whose body is counted as the app reads it.

    Past the limit the read raises `PayloadTooLarge`. FastAPI answers a failed body read with a
    400 of its own, so whatever the app then answers is replaced by the 413, unless it had
    already started its response before the body grew too large.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.received = 0
        self.exceeded = False
        self.app_started = False
        self.refused = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._scope = scope
        try:
            await self.app(scope, self.receive, self.send)
        except Exception:
            # Raised because the body was refused (the read's error, or the app's reaction to
            # it): the client is owed the 413, not a 500.
            if not self.exceeded or self.app_started:
                raise
        if self.exceeded and not self.app_started:
            await self._refuse()

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.exceeded = True
                raise PayloadTooLarge(self.limit)
        return message

    async def send(self, message: Message) -> None:
        if self.exceeded and not self.app_started:
            await self._refuse()
            return
        if message["type"] == "http.response.start":
            self.app_started = True
        await self._send(message)

    async def _refuse(self) -> None:
        if not self.refused:
            self.refused = True
            await error_response(PayloadTooLarge(self.limit))(
                self._scope, self._receive, self._send
            )


async def _authenticate(scope: Scope) -> None:
    """Raise `NotAuthenticated` unless the headers carry a valid credential; keep the
    principal for `get_principal`."""
    request = Request(scope)
    if getattr(request.app.state, "authenticator", None) is None:
        # The app has not started (no lifespan): the route's own dependency decides.
        return
    request.state.principal = await get_principal(
        request,
        request.app.state.authenticator,
        await api_key_header(request),
        await bearer_scheme(request),
    )


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        # The server refuses a malformed length itself; the body is still counted as read.
        return None
