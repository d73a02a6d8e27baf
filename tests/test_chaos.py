"""Chaos, short (bench/chaos.py): worker processes SIGKILLed, Redis restarted empty and every
database connection dropped while 500 mixed jobs run; each job must end once, as its task says."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.chaos import (
    Options,
    Run,
    check_runs,
    ending_died_with_worker,
    format_table,
    main,
    run,
)
from tests.conftest import TEST_DATABASE_URL


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
@pytest.mark.timeout(240)
async def test_every_job_ends_once_through_kills_redis_loss_and_dropped_connections(
    tmp_path: Path,
) -> None:
    options = Options(
        jobs=500,
        workers=3,
        kill_every=6,  # two kills, at 6 s and 12 s
        seconds=14,  # Redis restarted empty at 5.6 s, connections dropped at 8.4 s
        drain_timeout=90,
        settle=3,
        database_url=TEST_DATABASE_URL,
        work_dir=tmp_path,
        quiet=True,
    )
    report = await run(options)
    summary = format_table(options, report) + "\n" + "\n".join(report.faults[:40])
    assert report.faults == [], summary
    assert report.drained, summary
    assert report.accepted == 500, summary
    assert (report.kills, report.redis_restarts, report.db_drops) == (2, 1, 1), summary
    assert report.connections_dropped > 0, summary
    assert report.traced_runs > 0, summary
    assert report.webhooks_asked > 0, summary
    assert report.webhooks_delivered >= report.webhooks_asked, summary


def test_the_run_checks_catch_overlaps_and_runs_after_the_ending() -> None:
    """The checks the chaos relies on are not vacuous."""
    row = {"finished": 20.0}
    # Cut short by a kill at 5.0, run again at 6.0 elsewhere: fine.
    killed = [Run("j", 1, 100, 1.0), Run("j", 2, 200, 6.0, 7.0, "ok")]
    assert check_runs("j", killed, row, {100: 5.0}, {}) == []
    # The second run started while the first still ran.
    overlap = [Run("j", 1, 100, 1.0, 8.0, "ok"), Run("j", 2, 200, 6.0, 7.0, "ok")]
    assert "while try 1" in " ".join(check_runs("j", overlap, row, {}, {}))
    # A run after the recorded ending.
    late = [Run("j", 1, 100, 1.0, 2.0, "ok"), Run("j", 2, 200, 21.0, 22.0, "ok")]
    assert "after its recorded ending" in " ".join(check_runs("j", late, row, {}, {}))
    # Run again after a run that ended the job (its result): a fault, unless that run's
    # worker died right after it, before it could store the ending.
    again = [Run("j", 1, 100, 1.0, 2.0, "ok"), Run("j", 2, 200, 9.0, 9.5, "ok")]
    assert "had ended the job (ok)" in " ".join(check_runs("j", again, row, {}, {}))
    assert check_runs("j", again, row, {100: 2.1}, {}) == []
    # A run that never ended in a worker that was not killed.
    lost = [Run("j", 1, 100, 1.0)]
    assert "never ended" in " ".join(check_runs("j", lost, row, {}, {100: 30.0}))


def test_out_of_tries_is_excused_only_by_a_kill_right_after_the_ending() -> None:
    ended = [Run("j", 3, 100, 1.0, 1.5, "retry"), Run("j", 4, 100, 2.0, 2.1, "ok")]
    assert ending_died_with_worker(ended, {100: 2.5})  # died before storing the ending
    assert not ending_died_with_worker(ended, {100: 9.0})  # long after: stored
    assert not ending_died_with_worker(ended, {})  # never killed
    assert not ending_died_with_worker([Run("j", 3, 100, 1.0, 1.5, "retry")], {100: 1.6})


def test_help_lists_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--jobs", "--workers", "--kill-every", "--seconds", "--drain-timeout"):
        assert flag in text
