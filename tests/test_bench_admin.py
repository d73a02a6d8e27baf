"""The admin benchmark (bench/admin.py) runs end to end with tiny numbers and drops its database."""

from __future__ import annotations

import asyncio
import re
import shutil

import asyncpg
import pytest
from sqlalchemy import make_url

from bench import admin
from bench.queue import BenchError
from tests.conftest import TEST_DATABASE_URL

FORMATS = ("json", "csv", "html")
SIZES = ("200", "2000")
ARGS = ["--comments=2000", "--posts=20", f"--database-url={TEST_DATABASE_URL}"]


def bench_databases() -> set[str]:
    """The server's `vkp_bench_*` databases."""
    dsn = (
        make_url(TEST_DATABASE_URL)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )

    async def names() -> set[str]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            rows = await conn.fetch(
                r"SELECT datname FROM pg_database WHERE datname LIKE 'vkp\_bench\_%'"
            )
            return {row["datname"] for row in rows}
        finally:
            await conn.close()

    return asyncio.run(names())


def created_database(stderr: str) -> str:
    """The database the benchmark noted it made."""
    match = re.search(r"database (vkp_bench_\w+) created", stderr)
    assert match is not None, stderr
    return match[1]


def report_rows(output: str) -> dict[tuple[str, str], list[str]]:
    """(comments, format) -> [wall s, traced peak MiB, RSS growth MiB, report bytes]."""
    rows: dict[tuple[str, str], list[str]] = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) == 6 and cells[1] in FORMATS:
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


@pytest.mark.timeout(30)
def test_bench_reports_both_sizes_backs_up_and_drops_its_database(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = bench_databases()

    code = admin.main(ARGS)

    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = report_rows(captured.out)
    assert set(rows) == {(size, fmt) for size in SIZES for fmt in FORMATS}, captured.out
    for (size, fmt), (wall, traced_peak, rss_growth, size_bytes) in rows.items():
        assert float(wall) > 0, (size, fmt, captured.out)
        assert float(traced_peak) > 0, (size, fmt, captured.out)
        assert rss_growth == "n/a" or float(rss_growth) >= 0, (size, fmt, captured.out)
        assert int(size_bytes) > 0, (size, fmt, captured.out)
    assert "small community: 200 comments" in captured.out
    assert "big community: 2000 comments" in captured.out
    assert "counting keywords of the analysed comments" in captured.out
    if shutil.which("pg_dump") is not None:
        backup = re.search(r"file \(pg_dump --format=custom\)\s*\|\s*(\d+) bytes", captured.out)
        assert backup is not None and int(backup[1]) > 0, captured.out
    else:
        assert "pg_dump not found on PATH: backup skipped" in captured.out
    name = created_database(captured.err)
    assert name not in before
    assert name not in bench_databases()


@pytest.mark.timeout(30)
def test_bench_drops_its_database_when_the_run_fails(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing_seed(*args: object, **kwargs: object) -> None:
        raise BenchError("seeding failed on purpose")

    monkeypatch.setattr(admin, "seed", failing_seed)

    code = admin.main(ARGS)

    captured = capsys.readouterr()
    assert code == 1
    assert "bench: error: seeding failed on purpose" in captured.err
    assert created_database(captured.err) not in bench_databases()
