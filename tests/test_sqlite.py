"""The embedded default: the app and a job on a SQLite database file."""

from __future__ import annotations

import asyncio
from pathlib import Path

from src.arq.config import ArqSettings
from src.auth.config import AuthSettings
from src.config import DEFAULT_SQLITE_URL, Settings
from tests.arq.helpers import enqueue, wait_for
from tests.conftest import app_and_worker, migrate


async def test_app_and_worker_on_sqlite(
    tmp_path: Path, settings: Settings, arq_settings: ArqSettings, auth_settings: AuthSettings
) -> None:
    assert DEFAULT_SQLITE_URL.startswith("sqlite+aiosqlite:///./var/")
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    await asyncio.to_thread(migrate, url)  # alembic runs its own event loop
    sqlite_settings = settings.model_copy(update={"database_url": url})
    async with app_and_worker(
        sqlite_settings, arq_settings=arq_settings, auth_settings=auth_settings
    ) as client:
        job_id = (await enqueue(client, "add", kwargs={"a": 2, "b": 2})).json()["job_id"]
        done = await wait_for(client, job_id)
        assert done["status"] == "complete"
        assert done["result"] == {"sum": 4}
        assert done["tries"] == 1
        failed = (await enqueue(client, "fail")).json()["job_id"]
        assert (await wait_for(client, failed))["error"]["type"] == "ValueError"
        health = (await client.get("/api/v1/arq/health")).json()
        assert health["details"]["database_connected"] is True
    assert (tmp_path / "app.db").stat().st_size > 0
