"""`backup_database`: PostgreSQL (pg_dump, restored into a fresh database with pg_restore) and
SQLite (the online backup API) through a real worker; rotation, failures, the nightly schedule.

The PostgreSQL tests need pg_dump, pg_restore and createdb (postgresql-client) on PATH.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sqlite3
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import make_url

from src.arq.config import ArqSettings
from src.arq.worker import worker_options
from src.auth.config import AuthSettings
from src.comments import service
from src.config import ConfigError, Settings, load
from src.database import create_engine, create_sessionmaker
from src.maintenance import backup
from src.maintenance.config import BackupSettings, MaintenanceSettings
from src.maintenance.exceptions import BackupFailed, BackupTimedOut, BackupUnsupported
from tests.arq.helpers import enqueue, wait_for
from tests.conftest import WorkerHandle, app_and_worker, migrate
from tests.tasks import registry as test_registry

OWNER_ID = -7707
PROBES = [f"backup probe {i} {uuid.uuid4().hex[:6]}" for i in range(3)]
DOCKERFILE = Path(__file__).resolve().parents[2] / "docker" / "Dockerfile"


def probe_comments() -> list[dict[str, Any]]:
    return [
        {"id": i, "from_id": 1, "text": text, "likes": {"count": 0}, "date": 1_700_000_000 + i}
        for i, text in enumerate(PROBES)
    ]


async def seed(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine).begin() as session:
            await service.upsert_comments(
                session, owner_id=OWNER_ID, post_id=1, comments=probe_comments()
            )
    finally:
        await engine.dispose()


def database_name(database_url: str) -> str:
    name = make_url(database_url).database
    assert name
    return name


def files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


def backup_settings(directory: Path, **overrides: Any) -> BackupSettings:
    return BackupSettings(_env_file=None, dir=directory, **overrides)  # type: ignore[call-arg]


async def run_tool(*argv: str, env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    return output.decode()


async def run_backup(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await enqueue(client, "backup_database", owner="root")
    assert response.status_code == 202, response.text
    return await wait_for(client, response.json()["job_id"], owner="root", timeout=60)


@pytest.fixture
def backup_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """BACKUP_DIR for the worker (set before it starts); not created: the backup makes it."""
    directory = tmp_path / "backups"
    monkeypatch.setenv("BACKUP_DIR", str(directory))
    for name in ("BACKUP_KEEP", "BACKUP_PG_DUMP", "BACKUP_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    return directory


# -- PostgreSQL through the worker ------------------------------------------------------------


async def test_postgres_backup_restores_into_a_fresh_database(
    client: httpx.AsyncClient,
    worker_handle: WorkerHandle,
    backup_dir: Path,
    database_url: str,
) -> None:
    await seed(database_url)
    await worker_handle.start()
    done = await run_backup(client)
    assert done["status"] == "complete", done
    assert done["progress"] == 100
    result = done["result"]
    name = database_name(database_url)
    assert result["database"] == name
    assert result["format"] == "custom"
    assert result["removed"] == [] and result["kept"] == 1
    path = Path(result["path"])
    assert path.parent == backup_dir
    assert re.fullmatch(rf"{re.escape(name)}-\d{{8}}T\d{{6}}Z\.dump", path.name), path.name
    assert files(backup_dir) == [path.name]  # no temporary file left beside it
    assert result["size_bytes"] == path.stat().st_size > 0
    assert result["duration_ms"] >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(backup_dir.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format
    assert "postgresql" not in json.dumps(done)  # the URL is nowhere in the job

    server = make_url(database_url)
    env = backup.pg_environment(server.set(database="postgres"))
    fresh = f"vkp_restore_{uuid.uuid4().hex[:10]}"
    await run_tool("createdb", fresh, env=env)
    try:
        await run_tool(
            "pg_restore", "--no-owner", "--exit-on-error", "-d", fresh, str(path), env=env
        )
        dsn = server.set(drivername="postgresql", database=fresh)
        conn = await asyncpg.connect(dsn.render_as_string(hide_password=False), timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT comment_id, text FROM comments WHERE owner_id = $1 ORDER BY comment_id",
                OWNER_ID,
            )
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(
            server.set(drivername="postgresql", database="postgres").render_as_string(
                hide_password=False
            ),
            timeout=10,
        )
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')
        finally:
            await admin.close()
    assert [(row["comment_id"], row["text"]) for row in rows] == list(enumerate(PROBES))


async def test_rotation_keeps_the_newest_of_that_database_only(
    client: httpx.AsyncClient,
    worker_handle: WorkerHandle,
    backup_dir: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BACKUP_KEEP", "3")
    name = database_name(database_url)
    old = [f"{name}-20200101T000000Z.dump", f"{name}-20200102T000000Z.dump"]
    newest_old = f"{name}-20200102T000000Z-1.dump"  # a second backup in the same second
    unrelated = [
        "other_db-20200101T000000Z.dump",  # another database
        f"{name}-20200101T000000Z.sqlite3",  # another format
        f"{name}-notes.dump",
        f"{name}-20200101T000000Z.dump.bak",
        "README.txt",
        f".{name}-20200101T000000Z.dump.deadbeef.partial",  # a backup still being written
    ]
    backup_dir.mkdir()
    for file in [*old, newest_old, *unrelated]:
        (backup_dir / file).write_bytes(b"x")
    await worker_handle.start()

    first = (await run_backup(client))["result"]
    assert first["removed"] == [old[0]] and first["kept"] == 3
    second = (await run_backup(client))["result"]
    assert second["removed"] == [old[1]] and second["kept"] == 3
    assert first["path"] != second["path"]
    made = {Path(first["path"]).name, Path(second["path"]).name}
    assert set(files(backup_dir)) == {newest_old, *made, *unrelated}


async def test_user_may_not_back_up(client: httpx.AsyncClient) -> None:
    response = await enqueue(client, "backup_database", owner="alice")
    assert response.status_code == 403, response.text


async def test_missing_pg_dump_fails_clearly_and_leaves_nothing(
    client: httpx.AsyncClient,
    worker_handle: WorkerHandle,
    backup_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BACKUP_PG_DUMP", str(tmp_path / "nowhere" / "pg_dump"))
    await worker_handle.start()
    done = await run_backup(client)
    assert done["status"] == "failed", done
    assert done["error"]["type"] == "BackupToolMissing"
    assert "pg_dump not found" in done["error"]["message"]
    assert "BACKUP_PG_DUMP" in done["error"]["message"]
    assert files(backup_dir) == []


# -- PostgreSQL failures, in the domain -------------------------------------------------------


async def test_nonexistent_database_fails_without_file_or_password(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "Sup3r-s3cret-pw"
    url = make_url(database_url).set(database=f"vkp_missing_{uuid.uuid4().hex[:8]}")
    url = url.set(password=password)
    with pytest.raises(BackupFailed) as caught:
        await backup.backup_database(url, settings=backup_settings(tmp_path))
    message = str(caught.value)
    assert "does not exist" in message, message
    assert caught.value.exit_code == 1
    assert password not in message + repr(caught.value.extra) + caplog.text
    assert files(tmp_path) == []


def fake_pg_dump(directory: Path, body: str) -> Path:
    script = directory / "fake_pg_dump"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o700)
    return script


async def test_pg_dump_error_is_scrubbed_and_its_partial_output_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "p@ss:w0rd/with?odd&chars"
    script = fake_pg_dump(
        tmp_path,
        'printf "PGDMP half an archive"\n'
        'echo "args: $*" >&2\n'
        'echo "pg_dump: error: postgresql://$PGUSER:$PGPASSWORD@$PGHOST:$PGPORT/$PGDATABASE'
        ' failed (password=$PGPASSWORD) [$PGPASSWORD]" >&2\n'
        "exit 1\n",
    )
    out = tmp_path / "out"
    url = make_url("postgresql+asyncpg://someone@db.example:6543/shop").set(password=password)
    settings = backup_settings(out, pg_dump=str(script))
    with pytest.raises(BackupFailed) as caught:
        await backup.backup_database(url, settings=settings)
    message = str(caught.value)
    assert password not in message + caplog.text
    # The password went to pg_dump through its environment, never through its arguments.
    assert "args: --format=custom --no-password" in message
    assert "postgresql://someone:***@db.example:6543/shop" in message
    assert "password=*** [***]" in message
    assert caught.value.stderr in message
    assert files(out) == []


async def test_pg_dump_past_its_timeout_is_killed_and_cleaned_up(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = fake_pg_dump(tmp_path, f'echo $$ > "{pid_file}"\nprintf PGDMP\nexec sleep 30\n')
    out = tmp_path / "out"
    settings = backup_settings(out, pg_dump=str(script), timeout=0.5)
    with pytest.raises(BackupTimedOut, match="BACKUP_TIMEOUT"):
        await backup.backup_database(
            "postgresql+asyncpg://u@localhost/db", settings=settings, progress=None
        )
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
    assert files(out) == []


# -- SQLite -----------------------------------------------------------------------------------


async def test_sqlite_backup_through_the_worker_opens_with_the_data(
    tmp_path: Path,
    settings: Settings,
    arq_settings: ArqSettings,
    auth_settings: AuthSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    await asyncio.to_thread(migrate, url)  # alembic runs its own event loop
    await seed(url)
    out = tmp_path / "backups"
    monkeypatch.setenv("BACKUP_DIR", str(out))
    sqlite_settings = settings.model_copy(update={"database_url": url})
    async with app_and_worker(
        sqlite_settings, arq_settings=arq_settings, auth_settings=auth_settings
    ) as client:
        done = await run_backup(client)
    assert done["status"] == "complete", done
    result = done["result"]
    assert (result["database"], result["format"], result["kept"]) == ("app", "sqlite", 1)
    path = Path(result["path"])
    assert re.fullmatch(r"app-\d{8}T\d{6}Z\.sqlite3", path.name), path.name
    assert files(out) == [path.name]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as restored:
        assert restored.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = restored.execute(
            "SELECT comment_id, text FROM comments WHERE owner_id = ? ORDER BY comment_id",
            (OWNER_ID,),
        ).fetchall()
    restored.close()
    assert rows == list(enumerate(PROBES))


class FrozenClock(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> FrozenClock:
        return cls(2026, 12, 1, 2, 30, tzinfo=UTC)


async def test_same_second_backups_get_their_own_names_and_dead_partials_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "shop.db"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (42)")
    conn.close()
    monkeypatch.setattr(backup, "datetime", FrozenClock)
    out = tmp_path / "out"
    out.mkdir()
    # Left by a worker killed mid-backup long ago, and one being written now.
    stale, fresh = (
        out / f".shop-20200101T000000Z.sqlite3.{n}.partial" for n in ("0badf00d", "cafe0123")
    )
    stale.write_bytes(b"x")
    os.utime(stale, (0, 0))
    fresh.write_bytes(b"x")
    settings = backup_settings(out, keep=2, timeout=60)
    reports = [
        await backup.backup_database(f"sqlite+aiosqlite:///{source}", settings=settings)
        for _ in range(3)
    ]
    names = [Path(report.path).name for report in reports]
    assert names == [
        "shop-20261201T023000Z.sqlite3",
        "shop-20261201T023000Z-1.sqlite3",
        "shop-20261201T023000Z-2.sqlite3",
    ]
    assert reports[2].removed == [names[0]] and reports[2].kept == 2
    assert files(out) == sorted([fresh.name, *names[1:]])


@pytest.mark.parametrize(
    "url",
    ["sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:", "sqlite:///file::memory:?uri=true"],
)
async def test_in_memory_sqlite_cannot_be_backed_up(url: str, tmp_path: Path) -> None:
    with pytest.raises(BackupUnsupported, match="in-memory"):
        await backup.backup_database(url, settings=backup_settings(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


async def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(BackupFailed, match="does not exist"):
        await backup.backup_database(
            f"sqlite+aiosqlite:///{tmp_path / 'gone.db'}", settings=backup_settings(tmp_path)
        )
    assert files(tmp_path) == []


# -- schedule, settings, image ----------------------------------------------------------------


async def test_nightly_schedule_is_switchable_and_makes_a_backup(
    settings: Settings, backup_dir: Path
) -> None:
    def cron(maintenance_settings: MaintenanceSettings) -> list[Any]:
        options = worker_options(
            registry=test_registry,
            settings=settings,
            arq_settings=ArqSettings(_env_file=None),
            schedule_settings=[maintenance_settings],
        )
        return [job for job in options["cron_jobs"] if job.name == "cron:backup_database"]

    assert cron(MaintenanceSettings(_env_file=None, cron_backup=False)) == []
    (job,) = cron(MaintenanceSettings(_env_file=None, cron_backup=True))
    assert (job.hour, job.minute, job.unique) == (2, 30, True)
    assert MaintenanceSettings(_env_file=None).cron_backup  # on unless switched off

    handle = WorkerHandle(
        worker_options(
            registry=test_registry,
            settings=settings,
            arq_settings=ArqSettings(_env_file=None, poll_delay=0.05),
        )
    )
    worker = await handle.start()
    try:
        while "worker_id" not in worker.ctx:
            await asyncio.sleep(0.01)
        tick = datetime.now(UTC).replace(microsecond=0)
        (job,) = [c for c in worker.cron_jobs if c.name == "cron:backup_database"]
        job.next_run = tick
        await worker.run_cron(tick, 0.5)
        for _ in range(600):
            if worker.jobs_complete + worker.jobs_failed:
                break
            await asyncio.sleep(0.05)
        assert worker.jobs_complete == 1
    finally:
        await handle.stop()
    (made,) = files(backup_dir)
    assert made.startswith(database_name(settings.database_url) + "-") and made.endswith(".dump")


@pytest.mark.parametrize(
    ("variable", "value"),
    [("BACKUP_KEEP", "0"), ("BACKUP_TIMEOUT", "-1"), ("BACKUP_DIR", " "), ("BACKUP_PG_DUMP", "")],
)
def test_invalid_settings_name_the_variable(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load(BackupSettings)


def test_defaults() -> None:
    defaults = BackupSettings(_env_file=None)  # type: ignore[call-arg]
    assert (defaults.dir, defaults.keep, defaults.pg_dump) == (Path("backups"), 7, "pg_dump")


def test_worker_image_has_pg_dump() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"apt-get install [^\n]*postgresql-client", text), "no pg_dump in the image"
