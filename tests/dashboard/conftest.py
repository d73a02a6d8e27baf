"""Fixtures of the dashboard tests: the app with a known session secret, a browser per user."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from src.dashboard.config import DashboardSettings
from tests.dashboard.helpers import SECRET

Clients = Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def dashboard_settings() -> DashboardSettings:
    """The `app` fixture's (tests/conftest.py) dashboard settings: a known session secret."""
    return DashboardSettings(_env_file=None, secret=SECRET)  # type: ignore[arg-type]


@pytest.fixture
def browsers(app: Any) -> Clients:
    """Another browser (its own cookies) on the same app, as often as a test needs one."""

    @asynccontextmanager
    async def browser(base_url: str = "http://test") -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
            yield http

    return browser
