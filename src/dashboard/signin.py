"""Signing in and out of the dashboard: an API key or a JWT becomes a session cookie.

The cookie (`src.dashboard.session`) is signed, `HttpOnly`, `SameSite=Strict`, scoped to
`/dashboard`, `Secure` when the request came over HTTPS (`DASHBOARD_COOKIE_SECURE`), and lives
`DASHBOARD_SESSION_SECONDS` (a JWT's session: until its `exp` at the latest). The sign-in form
carries a CSRF token too, bound to an anonymous session, which signing in replaces.
"""

from __future__ import annotations

import re
import time
from typing import Annotated

import jwt
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from src.arq.dependencies import ArqServiceDep
from src.auth.dependencies import get_authenticator
from src.auth.exceptions import NotAuthenticated
from src.auth.schemas import Principal
from src.dashboard.dependencies import (
    CheckedFormDep,
    Dashboard,
    DashboardDep,
    SessionDep,
    ViewerDep,
    check_csrf,
    field,
    read_form,
    safe_next,
)
from src.dashboard.pages import DashboardRoute, render
from src.dashboard.session import (
    ANONYMOUS_SECONDS,
    COOKIE_NAME,
    COOKIE_PATH,
    SIGNED_OUT_KEY,
    Session,
    new_session,
    signed_in,
)

PREFIX = "/dashboard"
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

router = APIRouter(route_class=DashboardRoute)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def set_cookie(request: Request, response: Response, value: str, *, seconds: int) -> None:
    settings = request.app.state.dashboard.settings
    secure = settings.cookie_secure == "always" or (
        settings.cookie_secure == "auto" and request.url.scheme == "https"
    )
    response.set_cookie(
        COOKIE_NAME,
        value,
        max_age=seconds,
        path=COOKIE_PATH,
        secure=secure,
        httponly=True,
        samesite="strict",
    )


@router.get("/signin")
async def signin_form(
    request: Request,
    dashboard: DashboardDep,
    session: SessionDep,
    next_path: Annotated[str | None, Query(alias="next", max_length=300)] = None,
) -> Response:
    """The sign-in form (a signed-in browser goes on to the overview)."""
    if session is not None and session.principal is not None:
        return see_other(safe_next(next_path) or f"{PREFIX}/")
    return _signin_page(request, dashboard, session, next_path=safe_next(next_path))


def _signin_page(
    request: Request,
    dashboard: Dashboard,
    session: Session | None,
    *,
    next_path: str | None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    # An anonymous session carries the form's CSRF token (a sign-in is a state change too).
    if session is None or session.principal is not None:
        session = new_session()
    response = render(
        request,
        "signin.html",
        {"csrf": session.csrf, "next_path": next_path, "error": error},
        status_code=status_code,
    )
    set_cookie(request, response, dashboard.codec.dumps(session), seconds=ANONYMOUS_SECONDS)
    return response


@router.post("/signin")
async def signin(request: Request, dashboard: DashboardDep, session: SessionDep) -> Response:
    """Check an API key or a JWT; on success a new session cookie (never the credential)."""
    form = await read_form(request)
    check_csrf(session, form)
    next_path = safe_next(field(form, "next"))
    credential = (field(form, "credential") or "").strip()
    authenticator = await get_authenticator(request)
    seconds = dashboard.settings.session_seconds
    key: str | None = None
    principal: Principal | None = None
    try:
        if not credential:
            raise NotAuthenticated()
        try:
            principal = authenticator.from_api_key(credential)
            key = dashboard.codec.fingerprint(credential)
        except NotAuthenticated:
            if not _JWT_SHAPE.fullmatch(credential):
                raise
            principal = authenticator.from_bearer(credential)
            seconds = min(seconds, _jwt_seconds_left(credential))
    except NotAuthenticated:
        return _signin_page(
            request,
            dashboard,
            session,
            next_path=next_path,
            error="That API key or token was not accepted.",
            status_code=401,
        )
    fresh = signed_in(principal, seconds=seconds, key=key)
    response = see_other(next_path or f"{PREFIX}/")
    set_cookie(request, response, dashboard.codec.dumps(fresh), seconds=seconds)
    return response


def _jwt_seconds_left(token: str) -> int:
    """Seconds until a verified JWT's `exp` (its signature was checked by the authenticator)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return max(1, int(float(claims["exp"]) - time.time()))


@router.post("/signout")
async def signout(
    request: Request, viewer: ViewerDep, form: CheckedFormDep, service: ArqServiceDep
) -> Response:
    """End the session: its cookie is dropped and its id refused until it would have expired."""
    left = viewer.session.seconds_left()
    if left > 0:
        await service.redis.set(SIGNED_OUT_KEY.format(viewer.session.sid), "1", ex=left)
    response = see_other(f"{PREFIX}/signin")
    response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response
