"""The schedules' runs, queued through the job service (`JobWorker.run_cron`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from arq.cron import CronJob
from arq.utils import to_unix_ms

from src.arq.service import ArqService

logger = logging.getLogger("src.arq.worker")


async def queue_due_runs(
    service: ArqService,
    cron_jobs: Sequence[CronJob],
    schedules: dict[str, tuple[str, dict[str, Any]]],
    n: datetime,
    delay: float,
    num_windows: int,
) -> None:
    """ARQ's timing of the schedules (`Worker.run_cron`), but each run is queued through the
    job service: in the history, under an id no client can take (`cron:<task>:<ms>`); a slot
    held by anything else is logged and the schedule runs all the same."""
    cutoff = n.timestamp() + delay * num_windows
    due: list[tuple[CronJob, datetime]] = []
    for cron_job in cron_jobs:
        if cron_job.next_run is None:
            if cron_job.run_at_startup:
                cron_job.next_run = n
            else:
                cron_job.calculate_next(n)
                continue
        if cron_job.next_run.timestamp() < cutoff:
            due.append((cron_job, cron_job.next_run))
            cron_job.calculate_next(cron_job.next_run)
    for cron_job, run_at in due:
        task, kwargs = schedules.get(cron_job.name, (cron_job.name.removeprefix("cron:"), {}))
        try:
            await service.enqueue_scheduled(
                task, kwargs, slot=f"cron:{task}:{to_unix_ms(run_at)}", run_at=run_at
            )
        except Exception:  # one schedule's trouble must not stop the others
            logger.exception("could not queue the scheduled run of %s", task)
