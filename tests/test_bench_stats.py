"""bench/stats.py runs end to end with a tiny history, with and without the rollup, and drops
its database."""

from __future__ import annotations

import pytest

from bench import stats
from tests.conftest import TEST_DATABASE_URL
from tests.test_bench_admin import bench_databases, created_database

ROWS = 400
CASES = (
    ("admin", "24 h"),
    ("admin", "30 days"),
    ("admin", "all (366 days)"),
    ("user (user-000)", "30 days"),
    ("user (user-000)", "all (366 days)"),
    ("admin", "30 days, mid-hour ends"),
    ("admin", "366 days, mid-hour ends"),
    ("user (user-000)", "366 days, mid-hour ends"),
)


def table(output: str) -> dict[tuple[str, str], list[str]]:
    """(case, window) -> [jobs in window, median ms, min ms, max ms]."""
    rows: dict[tuple[str, str], list[str]] = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) == 6 and (cells[0], cells[1]) in CASES:
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


@pytest.mark.timeout(60)
@pytest.mark.parametrize("rollup", [True, False], ids=["rollup", "history alone"])
def test_bench_times_every_case_and_drops_its_database(
    capsys: pytest.CaptureFixture[str], rollup: bool
) -> None:
    before = bench_databases()
    flags = [f"--rows={ROWS}", "--owners=4", "--repeat=2", f"--database-url={TEST_DATABASE_URL}"]

    code = stats.main(flags if rollup else [*flags, "--no-rollup"])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = table(captured.out)
    assert set(rows) == set(CASES), captured.out
    jobs = {case: int(cells[0]) for case, cells in rows.items()}
    assert jobs[("admin", "all (366 days)")] == ROWS
    assert 0 < jobs[("user (user-000)", "all (366 days)")] < ROWS
    assert jobs[("admin", "24 h")] <= jobs[("admin", "30 days")] <= ROWS
    assert jobs[("user (user-000)", "30 days")] <= jobs[("admin", "30 days")]
    assert jobs[("admin", "366 days, mid-hour ends")] <= ROWS
    for case, (_, median, fastest, slowest) in rows.items():
        assert 0 < float(fastest) <= float(median) <= float(slowest), (case, captured.out)
    if rollup:
        assert "rolling up (not measured): " in captured.out
        assert "a roll-up pass after the newest job changed: " in captured.out
    else:
        assert "no rollup (--no-rollup): the statistics read the history alone" in captured.out
    name = created_database(captured.err)
    assert name not in before
    assert name not in bench_databases()


def test_bench_refuses_a_window_wider_than_the_apis(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        stats.parse_args(["--days=400"])
    assert exit_info.value.code == 2
    assert "--days: at most 366" in capsys.readouterr().err
