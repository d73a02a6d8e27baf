"""Completion webhooks: a job enqueued with `notify_url` gets a signed POST when it ends.

A subscriber of the job lifecycle events (`src.arq.events`): when a job's ending is recorded, in
whichever process records it, its webhook is queued as a `send_notification` job owned by the
job's owner, under an id derived from the ending, so two processes never queue one ending twice.
The workers' sweep (with each reconciliation pass) queues what a crash between the ending and its
event left owed.

    registry.on_service(install)  # in the webhooks package's task declarations
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from src.arq.events import EventKind, JobEvent
from src.arq.service import ArqService, FollowUp, JobEnding

logger = logging.getLogger(__name__)

NOTIFY_TASK = "send_notification"
NOTIFY_TEMPLATE = "job_finished"
# The ids of the webhook jobs; no client's job id may start with it.
ID_PREFIX = "notify-"
PAGE = 500


def notification_job_id(ending: JobEnding) -> str:
    """The id of the webhook job of this ending: the same for every caller, new per round."""
    finished = ending.finished_at.isoformat() if ending.finished_at else ""
    digest = hashlib.sha256(f"{ending.job_id}|{finished}".encode()).hexdigest()
    return f"{ID_PREFIX}{digest[:32]}"


def notification_kwargs(ending: JobEnding) -> dict[str, Any]:
    """The `send_notification` arguments: the `job_finished` template with the job's ending."""
    context: dict[str, Any] = {
        "job_id": ending.job_id,
        "function": ending.function,
        "status": ending.status.value,
        "tries": ending.tries,
        # A datetime: validating the arguments writes it as the API writes times.
        "finished_at": ending.finished_at,
    }
    if ending.error is not None:
        context["error"] = ending.error
    else:
        context["result"] = ending.result
    kwargs: dict[str, Any] = {
        "url": ending.notify_url,
        "template": NOTIFY_TEMPLATE,
        "context": context,
    }
    if ending.notify_secret:
        kwargs["secret"] = ending.notify_secret
    return kwargs


async def dispatch_notifications(
    jobs: ArqService, job_ids: Sequence[str] | None = None
) -> list[str]:
    """Queue the completion webhook of every finished job (of `job_ids`, or any) that asked for
    one and has none queued yet; the ids of the jobs served."""
    served: list[str] = []
    while True:
        owed = await jobs.owed_webhooks(job_ids, limit=PAGE)
        if not owed:
            return served
        await jobs.enqueue_follow_ups(
            [
                FollowUp(
                    after=ending.job_id,
                    function=NOTIFY_TASK,
                    job_id=notification_job_id(ending),
                    kwargs=notification_kwargs(ending),
                    owner=ending.owner,
                    priority=ending.priority,
                )
                for ending in owed
            ]
        )
        served.extend(ending.job_id for ending in owed)
        if len(owed) < PAGE:
            return served


def install(jobs: ArqService) -> None:
    """Serve `notify_url` for `jobs`: on each recorded ending, and with every sweep."""

    async def on_endings(events: Sequence[JobEvent]) -> None:
        owed = [event.job_id for event in events if event.notify]
        if not owed:
            return
        try:
            await dispatch_notifications(jobs, owed)
        except (SQLAlchemyError, RedisError, OSError):
            logger.warning("could not queue %d completion webhook(s); the sweep will", len(owed))

    async def sweep() -> None:
        await dispatch_notifications(jobs)

    jobs.events.subscribe(
        on_endings,
        kinds={EventKind.FINISHED, EventKind.ABORTED},
        delivers_completion_hooks=True,
    )
    jobs.add_sweep(sweep)
