"""The VK ingest benchmark (bench/vk_ingest.py) runs end to end with tiny numbers and cleans up."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest
import redis as sync_redis
from sqlalchemy import make_url

from bench.vk_ingest import Options, expected_requests, main
from tests.conftest import CLAIM_KEY

RPS = 3
TABLES = ("arq_jobs", "communities", "posts", "comments")


def count_rows(database_url: str) -> dict[str, int]:
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def count() -> dict[str, int]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return {
                table: int(await conn.fetchval(f"SELECT count(*) FROM {table}")) for table in TABLES
            }
        finally:
            await conn.close()

    return asyncio.run(count())


def parse_table(output: str) -> dict[str, str]:
    """metric -> value, from the benchmark's first table."""
    rows: dict[str, str] = {}
    for line in output.split("\n\n")[1].splitlines()[2:]:
        metric, _, value = line.partition(" | ")
        rows[metric.strip()] = value.strip()
    return rows


def vk_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name.startswith("VK_")}


def test_expected_requests_counts_pages_batches_and_threads() -> None:
    def options(posts: int, comments: int, replies: int) -> Options:
        return Options(posts, comments, replies, 3.0, 0.0, "", False, False, "", None)

    # community + wall, first pages, 20 posts x 9 more pages in 25-call requests
    assert expected_requests(options(20, 1000, 2)) == 2 + 1 + 8
    # two batches of posts (25 + 5); no thread requests while replies fit inline
    assert expected_requests(options(30, 120, 10)) == 2 + (1 + 1) + (1 + 1)
    # 11 replies: every comment's thread is read on its own (2 posts x 30 comments = 60 calls)
    assert expected_requests(options(2, 30, 11)) == 2 + 1 + 3
    # 150 posts: a second wall page, through execute
    assert expected_requests(options(150, 0, 0)) == 3 + 6


@pytest.mark.timeout(30)
def test_bench_ingests_within_the_rate_limit(
    redis_url: str,
    database_url: str,
    redis_db: sync_redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows_before = count_rows(database_url)
    environment_before = vk_environment()

    # 30 posts: two batches of posts; 6 requests, so the limiter has to hold some back.
    code = main(
        [
            "--posts=30",
            "--comments-per-post=120",
            "--replies=1",
            f"--rps={RPS}",
            f"--redis-url={redis_url}",
            "--shared-redis",
            f"--use-database={database_url}",
        ]
    )

    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = parse_table(captured.out)
    assert table["comments stored"] == str(30 * 120 * 2), captured.out
    assert float(table["comments/s"]) > 0, captured.out
    requests = int(table["HTTP requests (server record)"].split()[0])
    assert requests >= 6, captured.out
    assert "; 6 expected" in table["HTTP requests (server record)"], captured.out
    most = int(table["max requests in a rolling second"].split()[0])
    assert 0 < most <= RPS, captured.out
    assert table["ceiling: 25 x 100 x 3"] == "7500 top-level comments/s", captured.out
    assert "where the time went" in captured.out
    # The worker's VK settings came from the environment only for the run.
    assert vk_environment() == environment_before
    # Only the test run's claim is left in its Redis database, and none of the benchmark's rows.
    assert set(redis_db.scan_iter()) == {CLAIM_KEY.encode()}
    assert count_rows(database_url) == rows_before
