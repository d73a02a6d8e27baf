"""The HTTP load benchmark (bench/http_load.py) starts its own stack, loads it and accounts for
every job it got accepted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.http_load import Endpoint, Load, Options, all_completed, format_report, parse_args
from tests.conftest import TEST_DATABASE_URL

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
@pytest.mark.timeout(300)
def test_a_started_stack_takes_the_load_and_completes_every_accepted_job() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.http_load",
            "--start",
            "--users=5",
            "--seconds=3",
            f"--database-url={TEST_DATABASE_URL}",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=280,
    )
    output = result.stdout
    assert result.returncode == 0, output + result.stderr[-3000:]
    assert "every accepted job completed: yes" in output, output
    accepted = re.search(r"jobs: (\d+) accepted; (\d+) complete", output)
    assert accepted is not None, output
    assert int(accepted[1]) > 0 and accepted[1] == accepted[2], output
    rows = {line.split("|")[0].strip(): line for line in output.splitlines() if " | " in line}
    assert set(rows) == {"endpoint", "enqueue", "status"}, output
    for endpoint in ("enqueue", "status"):
        cells = [cell.strip() for cell in rows[endpoint].split("|")]
        requests, p50, p99, largest, errors = (
            int(cells[1]),
            float(cells[3]),
            float(cells[5]),
            float(cells[6]),
            cells[7],
        )
        assert requests > 0 and 0 < p50 <= p99 <= largest, output
        assert errors == "0", output
    assert "requests/s" in output and "API CPU:" in output, output


def test_a_job_left_unfinished_fails_the_check() -> None:
    load = Load(accepted=["a", "b"], ended={"a": "complete"}, seconds=1.0)
    load.enqueue = Endpoint(latencies_ms=[1.0, 2.0])
    assert not all_completed(load)
    report = format_report(Options(), "http://example.invalid", load)
    assert "every accepted job completed: NO" in report
    assert "1 not finished" in report
    load.ended["b"] = "failed"
    assert not all_completed(load)
    load.ended["b"] = "complete"
    assert all_completed(load)


def test_against_a_url_an_api_key_is_needed() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--url", "http://127.0.0.1:8000", "--api-key", ""])
    options = parse_args(["--url", "http://127.0.0.1:8000/", "--api-key", "k", "--users", "3"])
    assert (options.url, options.users, options.start) == ("http://127.0.0.1:8000", 3, False)
