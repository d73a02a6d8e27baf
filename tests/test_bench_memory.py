"""bench/memory.py runs end to end with tiny numbers and drops its database."""

from __future__ import annotations

import pytest

from bench import memory
from tests.conftest import TEST_DATABASE_URL
from tests.test_bench_admin import bench_databases, created_database

SIZES = ("300", "900")
TASKS = (
    "extract_keywords (all, frequency)",
    "extract_keywords (half, tf-idf)",
    "process_batch_comments",
)


def table(output: str) -> dict[tuple[str, str], list[str]]:
    """(comments, task) -> [seconds, peak RSS MiB, RSS growth MiB, notes]."""
    rows: dict[tuple[str, str], list[str]] = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) == 6 and cells[1] in TASKS:
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


@pytest.mark.timeout(60)
def test_bench_measures_every_task_at_every_size_and_drops_its_database(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = bench_databases()

    code = memory.main(
        [
            f"--sizes={','.join(SIZES)}",
            "--warm-up=100",
            "--posts=10",
            "--vocabulary=300",
            f"--database-url={TEST_DATABASE_URL}",
        ]
    )

    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = table(captured.out)
    assert set(rows) == {(size, task) for size in SIZES for task in TASKS}, captured.out
    for (size, task), (seconds, peak, growth, notes) in rows.items():
        assert float(seconds) >= 0, (size, task, captured.out)
        assert peak == "n/a" or float(peak) > 0, (size, task, captured.out)
        assert growth == "n/a" or float(growth) >= 0, (size, task, captured.out)
        assert "top: " in notes, (size, task, captured.out)
    assert "900 analyses stored" in captured.out
    name = created_database(captured.err)
    assert name not in before
    assert name not in bench_databases()
