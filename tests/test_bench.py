"""The queue benchmark (bench/queue.py) runs end to end with tiny numbers and cleans up."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import redis as sync_redis
from sqlalchemy import make_url

from bench.queue import ARQ_WORKER, PlainArq, main
from src.arq.worker import JobWorker
from tests.conftest import CLAIM_KEY

VARIANTS = {"plain arq", "module, features off", "module API", "module HTTP"}
# The class each variant's worker is built from, as the benchmark notes it on stderr.
WORKER_CLASSES = {
    "plain arq": "arq.worker.Worker",
    "module, features off": "arq.worker.Worker",
    "module API": "src.arq.job_worker.JobWorker",
    "module HTTP": "src.arq.job_worker.JobWorker",
}


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
    """variant -> [poll delay, jobs/s, RTT median ms, RTT p99 ms, pickup median ms]."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) == 6 and cells[0] != "variant":
            rows[cells[0]] = cells[1:]
    return rows


def test_plain_arq_uses_arqs_own_worker() -> None:
    # tests.conftest imported src.arq.worker, which rebinds arq.worker.Worker to JobWorker.
    assert PlainArq.worker_class is ARQ_WORKER
    assert ARQ_WORKER.__module__ == "arq.worker"
    assert not issubclass(ARQ_WORKER, JobWorker)


@pytest.mark.timeout(40)
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
    for variant, (poll_delay, jobs_per_second, median, p99, pickup) in table.items():
        assert poll_delay == "0.01 s", variant
        assert float(jobs_per_second) > 0, variant
        assert 0 < float(median) <= float(p99), variant
        assert 0 <= float(pickup) <= float(p99) + 1, variant  # pick-up: whole ms
        assert f"{variant}, poll delay 0.01 s: {WORKER_CLASSES[variant]};" in captured.err
    # Only the test run's claim is left in its Redis database, and no benchmark rows.
    assert set(redis_db.scan_iter()) == {CLAIM_KEY.encode()}
    assert count_rows(database_url) == rows_before
