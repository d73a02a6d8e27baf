"""Rendering: the templates (Jinja2, autoescaped), the security headers every dashboard answer
carries, and the route class that turns errors into HTML pages instead of the API's JSON."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from src.exceptions import AppError

logger = logging.getLogger("src.dashboard")

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"

# No inline script or style anywhere: every script and stylesheet is a file of the package.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

ERROR_TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    409: "Not possible now",
    413: "Too large",
    429: "Too many requests",
    503: "Unavailable",
}


def format_when(value: datetime | None) -> str:
    """A time as the pages show it (UTC, to the second); '—' for none."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 60:
        return f"{value:.2f} s"
    minutes, seconds = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


templates = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=True,  # every template, whatever its name: what a page shows is text
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["when"] = format_when
templates.filters["seconds"] = _seconds


class SignInRequired(Exception):
    """No (valid) session: the browser is sent to the sign-in page."""

    def __init__(self, next_path: str | None = None) -> None:
        super().__init__("sign in first")
        self.next_path = next_path


class Refused(Exception):
    """A request the dashboard refuses with an HTML page (a bad CSRF token: 403)."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """A page from `template`; `context` is escaped wherever the page shows it."""
    page = templates.get_template(template).render(
        {"request_path": request.url.path, "principal": None, "csrf": None, "notice": None}
        | dict(context)
    )
    response = HTMLResponse(page, status_code=status_code, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(request: Request, status_code: int, detail: str) -> HTMLResponse:
    """The one error page: a status and a fixed or service-written message (escaped)."""
    title = ERROR_TITLES.get(status_code, "Error")
    principal = getattr(request.state, "dashboard_principal", None)
    csrf = getattr(request.state, "dashboard_csrf", None)
    return render(
        request,
        "error.html",
        {
            "title": title,
            "status_code": status_code,
            "detail": detail,
            "principal": principal,
            "csrf": csrf,
        },
        status_code=status_code,
    )


def not_found(request: Request) -> HTMLResponse:
    # The same page for a crafted id, a missing job and someone else's: nothing tells them apart.
    return error_page(request, 404, "There is no such page, or it is not yours to see.")


class DashboardRoute(APIRoute):
    """A route whose errors are HTML pages with the dashboard's security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired as exc:
                target = "/dashboard/signin"
                if exc.next_path:
                    target += "?" + urlencode({"next": exc.next_path})
                response = RedirectResponse(target, status_code=303)
            except RequestValidationError as exc:
                if any(error.get("loc", ())[:1] == ("path",) for error in exc.errors()):
                    response = not_found(request)  # a crafted job id: no such page
                else:
                    response = error_page(request, 400, "Check the filters: one is out of range.")
            except Refused as exc:
                response = error_page(request, exc.status_code, exc.detail)
            except AppError as exc:
                if exc.status_code == 404:
                    response = not_found(request)
                else:
                    response = error_page(request, exc.status_code, exc.detail)
                    for name, value in (exc.headers or {}).items():
                        response.headers[name] = value
            except (RedisError, SQLAlchemyError, OSError, TimeoutError) as exc:
                logger.warning("dashboard: %s on %s", type(exc).__name__, request.url.path)
                response = error_page(
                    request, 503, "Redis or the database is unreachable; try again shortly."
                )
                response.headers["Retry-After"] = "5"
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return route
