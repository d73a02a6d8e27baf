"""Fixtures of the comments tests: the fake VK server, and workers pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.vk.fake_server import TOKEN, FakeVK, serve


@pytest.fixture
async def fake_vk(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeVK]:
    """The fake VK API, with the workers' VK settings pointed at it."""
    fake = FakeVK()
    async with serve(fake):
        monkeypatch.setenv("VK_TOKEN", TOKEN)
        monkeypatch.setenv("VK_API_URL", fake.url)
        monkeypatch.setenv("VK_REQUESTS_PER_SECOND", "50")
        monkeypatch.setenv("VK_RETRY_BACKOFF", "0.01")
        monkeypatch.setenv("VK_RETRY_BACKOFF_MAX", "0.05")
        yield fake
