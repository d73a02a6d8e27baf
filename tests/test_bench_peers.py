"""The peers benchmark (bench/peers.py) runs end to end with tiny numbers: one row per library
that is installed, every ratio against the best peer, and every module job in the history."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.peer_clients import LIBRARIES, PEERS
from bench.peers import format_table, history_error
from tests.conftest import TEST_DATABASE_URL

ROOT = Path(__file__).resolve().parent.parent
HEADER = [
    "library",
    "enqueue jobs/s",
    "x best",
    "no-op jobs/s",
    "x best",
    "worker CPU ms/job",
    "x best",
    "RT median ms",
    "x best",
    "RT p99 ms",
]


def table_rows(output: str) -> list[list[str]]:
    """The table's lines as cells (header first)."""
    return [
        [cell.strip() for cell in line.split("|")]
        for line in output.splitlines()
        if line.count(" | ") == len(HEADER) - 1
    ]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
@pytest.mark.timeout(420)
def test_every_installed_library_gets_a_row_and_every_module_job_reaches_the_history() -> None:
    installed = [key for key, kind in LIBRARIES.items() if kind.missing() is None]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.peers",
            "--jobs=200",
            "--passes=1",
            "--round-trips=10",
            "--arq-round-trips=2",
            f"--libraries={','.join(installed)}",
            f"--database-url={TEST_DATABASE_URL}",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=400,
    )
    output = result.stdout
    assert result.returncode == 0, output + result.stderr[-3000:]
    rows = table_rows(output)
    assert rows[0] == HEADER, output
    labels = [row[0] for row in rows[1:]]
    assert len(labels) == len(installed), output
    assert labels[:2] == ["this module, enqueue_job", "this module, enqueue_batch of 1 000"]
    peers_here = [key for key in installed if key in PEERS]
    for row in rows[1:]:
        values = [float(row[index]) for index in (1, 3, 5, 7, 9)]
        assert all(value > 0 for value in values), row
        ratios = [row[index] for index in (2, 4, 6, 8)]
        assert all(ratio != "-" for ratio in ratios) if peers_here else ratios == ["-"] * 4
    if peers_here:
        # Each ratio column holds a 1.00: the best peer's own row.
        for index in (2, 4, 6, 8):
            assert "1.00" in [row[index] for row in rows[1:]], output
    # 200 queued + 1 warm-up + 10 round trips, for each of the two module rows.
    assert "history: all 422 module jobs complete in the database" in output, output
    assert "ERROR" not in output


def test_a_history_mismatch_is_reported() -> None:
    assert history_error(422, 422, 422) is None
    message = history_error(422, 421, 422)
    assert message is not None and "421 complete" in message and "422" in message


def test_the_ratios_compare_with_the_best_peer_of_each_column() -> None:
    labels = {"module": "this module", "saq": "saq", "arq": "arq"}
    rows = {
        # enqueue/s, jobs/s, CPU ms/job, RT median, RT p99
        "module": (500.0, 1500.0, 0.5, 10.0, 20.0),
        "saq": (1000.0, 1000.0, 0.6, 2.0, 3.0),
        "arq": (800.0, 750.0, 0.4, 500.0, 502.0),
    }
    table = table_rows(format_table(labels, rows))
    module = table[1]
    assert module[2] == "0.50"  # enqueue: half of saq's
    assert module[4] == "1.50"  # throughput: 1.5x saq's
    assert module[6] == "1.25"  # CPU: over arq's, the lowest
    assert module[8] == "5.00"  # RT median: 5x saq's
