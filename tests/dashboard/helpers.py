"""Signing in to the dashboard and reading its pages, as a browser would (through httpx)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.arq.helpers import enqueue
from tests.conftest import API_KEYS

DASHBOARD = "/dashboard"
SECRET = "dashboard-test-secret-0123456789abcdef"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: str) -> str:
    """The CSRF token of a page's forms."""
    found = _CSRF.search(page)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, credential: str) -> httpx.Response:
    """Open the sign-in form and post `credential` with the form's token."""
    form = await client.get(f"{DASHBOARD}/signin")
    assert form.status_code == 200, form.text
    return await client.post(
        f"{DASHBOARD}/signin",
        data={"csrf_token": csrf_of(form.text), "credential": credential},
    )


async def signed_in(client: httpx.AsyncClient, owner: str) -> str:
    """Sign `owner` in with their API key; the CSRF token of their session."""
    response = await sign_in(client, API_KEYS[owner])
    assert response.status_code == 303, response.text
    overview = await client.get(f"{DASHBOARD}/")
    assert overview.status_code == 200, overview.text
    return csrf_of(overview.text)


async def post(
    client: httpx.AsyncClient, path: str, csrf: str | None, **fields: Any
) -> httpx.Response:
    """Post a dashboard form (with `csrf` as its token unless None)."""
    data = {**fields} if csrf is None else {"csrf_token": csrf, **fields}
    return await client.post(f"{DASHBOARD}{path}", data=data)


def set_cookie_header(response: httpx.Response) -> str:
    """The response's one Set-Cookie header."""
    [header] = response.headers.get_list("set-cookie")
    return header


async def queued_job(
    client: httpx.AsyncClient, function: str, owner: str = "alice", **kwargs: Any
) -> str:
    """Queue `function(**kwargs)` for `owner` through the REST API; the job's id."""
    response = await enqueue(client, function, owner=owner, kwargs=kwargs)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id
