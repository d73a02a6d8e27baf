"""The queue benchmark (bench/queue.py) runs end to end with tiny numbers and cleans up."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import redis as sync_redis
from sqlalchemy import make_url

from bench.queue import main
from tests.conftest import CLAIM_KEY

VARIANTS = {"plain arq", "module API", "module HTTP"}


def count_rows(database_url: str) -> int:
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def count() -> int:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM arq_jobs"))
        finally:
            await conn.close()

    return asyncio.run(count())


def parse_table(output: str) -> dict[str, list[str]]:
    """variant -> [poll delay, jobs/s, RTT median ms, RTT p99 ms]."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) == 5 and cells[0] != "variant":
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.timeout(30)
def test_bench_measures_every_variant(
    redis_url: str,
    database_url: str,
    redis_db: sync_redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows_before = count_rows(database_url)

    code = main(
        [
            "--jobs=20",
            "--round-trips=5",
            "--poll-delays=0.01",
            f"--redis-url={redis_url}",
            "--shared-redis",
            f"--use-database={database_url}",
        ]
    )

    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = parse_table(captured.out)
    assert set(table) == VARIANTS, captured.out
    for variant, (poll_delay, jobs_per_second, median, p99) in table.items():
        assert poll_delay == "0.01 s", variant
        assert float(jobs_per_second) > 0, variant
        assert 0 < float(median) <= float(p99), variant
    # Only the test run's claim is left in its Redis database, and no benchmark rows.
    assert set(redis_db.scan_iter()) == {CLAIM_KEY.encode()}
    assert count_rows(database_url) == rows_before
