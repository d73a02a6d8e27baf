"""Who is looking (the session cookie), and the checks of every form a page posts."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq.dependencies import ArqServiceDep
from src.arq.schemas import JOB_ID_PATTERN
from src.auth.schemas import Principal
from src.dashboard.config import DashboardSettings
from src.dashboard.pages import Refused, SignInRequired
from src.dashboard.session import COOKIE_NAME, SIGNED_OUT_KEY, Session, SessionCodec, tokens_match

# Where a sign-in may send the browser back to: a dashboard page, nothing else.
_SAFE_NEXT = re.compile(r"/dashboard(/[A-Za-z0-9_.:\-]+)*/?")
# A job id in a page's path: anything else is the 404 page.
JobIdPath = Annotated[str, Path(pattern=JOB_ID_PATTERN)]
# An admin's owner filter of a listing (a user's is ignored: their own rows only).
OwnerQuery = Annotated[str | None, Query(max_length=100, pattern=r"^[^\x00]*$")]
# Fields one form may post (the dead-letter retry posts a page of ids at most).
MAX_FORM_FIELDS = 1000


@dataclass(frozen=True, slots=True)
class Dashboard:
    """The dashboard's state in the app (`app.state.dashboard`)."""

    settings: DashboardSettings
    codec: SessionCodec


@dataclass(frozen=True, slots=True)
class Viewer:
    """A signed-in browser: its principal and session."""

    principal: Principal
    session: Session


def get_dashboard(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


DashboardDep = Annotated[Dashboard, Depends(get_dashboard)]


def safe_next(path: str | None) -> str | None:
    """`path` if it is a dashboard page to return to after signing in, else None."""
    if path and _SAFE_NEXT.fullmatch(path) and ".." not in path:
        return path
    return None


async def get_session(
    request: Request, dashboard: DashboardDep, service: ArqServiceDep
) -> Session | None:
    """The browser's valid session, signed in or not; None without one."""
    session = dashboard.codec.loads(request.cookies.get(COOKIE_NAME))
    if session is None or session.owner is None:
        return session
    # Signed out: refused until it would have expired, whoever replays the cookie.
    return None if await service.redis.exists(SIGNED_OUT_KEY.format(session.sid)) else session


SessionDep = Annotated[Session | None, Depends(get_session)]


async def get_viewer(request: Request, session: SessionDep) -> Viewer:
    """The signed-in browser; a GET without a session goes to the sign-in page."""
    principal = session.principal if session is not None else None
    if session is None or principal is None:
        if request.method != "GET":
            raise Refused(403, "Your session has ended: sign in again.")
        raise SignInRequired(safe_next(request.url.path))
    # For the error pages, which show the navigation of a signed-in viewer.
    request.state.dashboard_principal = principal
    request.state.dashboard_csrf = session.csrf
    return Viewer(principal=principal, session=session)


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


async def read_form(request: Request) -> dict[str, list[str]]:
    """A posted form's fields (URL-encoded; the request guard has bounded the body), after the
    same-origin check: a browser's cross-site post is refused whatever it carries."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise Refused(403, "This form was posted from another site.")
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Refused(403, "This form was posted from another site.")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        return {}  # not a page's form: it carries no CSRF token either (a 403)
    try:
        text = (await request.body()).decode("utf-8")
        return parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "Post the page's form.") from None


def field(form: dict[str, list[str]], name: str) -> str | None:
    """A form field's (first) value."""
    values = form.get(name)
    return values[0] if values else None


def check_csrf(session: Session | None, form: dict[str, list[str]]) -> None:
    """403 unless the form carries this session's CSRF token."""
    if session is None or not tokens_match(session.csrf, field(form, "csrf_token")):
        raise Refused(403, "This form has expired or did not come from this dashboard: reload.")


async def checked_form(request: Request, viewer: ViewerDep) -> dict[str, list[str]]:
    """A signed-in viewer's form, its CSRF token checked."""
    form = await read_form(request)
    check_csrf(viewer.session, form)
    return form


CheckedFormDep = Annotated[dict[str, list[str]], Depends(checked_form)]


async def get_database(request: Request) -> AsyncIterator[AsyncSession]:
    """A database session for one page (the pages read; jobs write)."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        yield session


DatabaseDep = Annotated[AsyncSession, Depends(get_database)]
