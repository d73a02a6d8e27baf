"""Job lifecycle events: the one seam between the job module and whatever reacts to jobs.

The job service and the workers publish a `JobEvent` whenever a job is enqueued, starts, reports
progress, goes back to wait for a retry, finishes or is aborted, and only after the change is
recorded in the job history. Publishing does two things:

- in the process where it happens, every subscriber of `JobEvents` gets the events, in batches
  (completion webhooks, metrics): `events.subscribe(handler, kinds={EventKind.FINISHED})`;
- other processes get them through Redis pub/sub, one channel per job (`keys.job_events`), the
  event as JSON (status streams, dashboards): `JobEvent.from_json(message["data"])`. The same
  channel also carries a bare `wake` when a try ended in Redis, before the history records it
  (`src.arq.queue.WAKE`): not an event (`from_json` refuses it); listeners that only wake up
  and read the job again (status streams, `ArqService.wait_for_result`) gain the commit's time.

The events of one job published by one process come in order (its start before its progress,
its ending last). Between processes there is no order: a status read on the API that finds an
ending in Redis records (and announces) it, and the worker's start of that job may be announced
after it. An ending is final; a consumer ignores what comes after it.

A subscriber's failure is logged and never reaches the job or the publisher; delivery to other
processes is best effort (pub/sub keeps nothing for a process that is not listening), so a
consumer that must not miss anything reads the history too, as the webhook sweep does.

Packages subscribe at start-up through the task registry (`registry.on_service(install)`):
`install(jobs)` runs for every `ArqService` built, in the API process and in each worker.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from enum import StrEnum
from typing import Any, Self

import orjson
from redis.exceptions import RedisError

from src.arq import keys
from src.arq.outcome import Outcome
from src.arq.schemas import JobStatus

logger = logging.getLogger(__name__)


class EventKind(StrEnum):
    ENQUEUED = "enqueued"  # queued or deferred: new, retried by a user, or queued again
    STARTED = "started"  # a worker started a try
    PROGRESS = "progress"  # the task reported progress or a message
    RETRYING = "retrying"  # a try ended and the job waits for the next one
    FINISHED = "finished"  # complete or failed (`status` says which), recorded for good
    ABORTED = "aborted"  # stopped on request (before it started, or while running)


@dataclass(frozen=True, slots=True)
class JobEvent:
    """What happened to one job. `function` and `owner` are filled where the publisher knows
    them without another read (always for enqueued, started and endings)."""

    kind: EventKind
    job_id: str
    function: str | None = None
    owner: str | None = None
    status: JobStatus | None = None
    job_try: int | None = None
    progress: int | None = None
    message: str | None = None
    # Endings: the error's type (failed, aborted) and how long the last try ran.
    error_type: str | None = None
    duration_seconds: float | None = None
    # Starts: how long the job waited since it was due (queued, or its deferral or retry ended).
    queue_wait_seconds: float | None = None
    # Enqueued again because its worker was lost (killed, or its lease lapsed): a re-run.
    lost: bool = False
    # The job asked for a completion webhook (`notify_url`) that is not queued yet.
    notify: bool = False

    def to_json(self) -> bytes:
        # Not `dataclasses.asdict`: it deep-copies every field, and this runs per job event.
        values = {name: getattr(self, name) for name in _FIELDS}
        return orjson.dumps({k: v for k, v in values.items() if v is not None})

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        """An event from its JSON; `ValueError` if it is not one."""
        try:
            raw = orjson.loads(data)
            fields: dict[str, Any] = dict(raw)
            fields["kind"] = EventKind(fields["kind"])
            if "status" in fields:
                fields["status"] = JobStatus(fields["status"])
            return cls(**fields)
        except (orjson.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"not a job event: {exc}") from None

    @classmethod
    def ending(
        cls,
        job_id: str,
        outcome: Outcome,
        *,
        function: str | None,
        owner: str | None,
        notify: bool = False,
    ) -> Self:
        """The event of a recorded ending: finished (complete, failed) or aborted."""
        duration = None
        if outcome.started_at is not None:
            duration = max(0.0, (outcome.finished_at - outcome.started_at).total_seconds())
        return cls(
            kind=EventKind.ABORTED if outcome.status is JobStatus.ABORTED else EventKind.FINISHED,
            job_id=job_id,
            function=function,
            owner=owner,
            status=outcome.status,
            job_try=outcome.tries,
            error_type=outcome.error["type"] if outcome.error else None,
            duration_seconds=duration,
            notify=notify,
        )

    @property
    def ends(self) -> bool:
        """The job's round is over (finished or aborted)."""
        return self.kind in (EventKind.FINISHED, EventKind.ABORTED)


_FIELDS = tuple(field.name for field in dataclass_fields(JobEvent))
Handler = Callable[[Sequence[JobEvent]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Subscription:
    handler: Handler
    kinds: frozenset[EventKind] | None


class JobEvents:
    """The events of one process: subscribers get batches, other processes get them on Redis."""

    def __init__(self, redis: Any = None) -> None:
        self.redis = redis
        self._subscriptions: list[_Subscription] = []
        self.delivers_completion_hooks = False

    def subscribe(
        self,
        handler: Handler,
        *,
        kinds: Collection[EventKind] | None = None,
        delivers_completion_hooks: bool = False,
    ) -> None:
        """Call `handler` with each batch of events of `kinds` (all kinds if None) published
        in this process. `delivers_completion_hooks`: this subscriber sends the completion
        webhooks that jobs ask for with `notify_url` (without one, enqueue refuses them)."""
        chosen = frozenset(kinds) if kinds is not None else None
        self._subscriptions.append(_Subscription(handler, chosen))
        self.delivers_completion_hooks |= delivers_completion_hooks

    async def publish(self, events: Iterable[JobEvent], *, remote: bool = True) -> None:
        """Hand `events` to this process' subscribers and (with `remote`) to other processes."""
        batch = list(events)
        if not batch:
            return
        for subscription in self._subscriptions:
            chosen = (
                batch
                if subscription.kinds is None
                else [event for event in batch if event.kind in subscription.kinds]
            )
            if not chosen:
                continue
            try:
                await subscription.handler(chosen)
            except Exception:  # a subscriber's trouble is its own
                logger.exception(
                    "job event subscriber %s failed on %d event(s)",
                    getattr(subscription.handler, "__qualname__", subscription.handler),
                    len(chosen),
                )
        if remote and self.redis is not None:
            await send(self.redis, batch)


async def send(redis: Any, events: Sequence[JobEvent]) -> None:
    """Publish `events` on their jobs' channels (best effort: a missed event costs a status
    stream one re-read, at its next safety-net wake-up)."""
    if not events:
        return
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.publish(keys.job_events(event.job_id), event.to_json())
            await pipe.execute()
    except (RedisError, OSError):
        logger.debug("could not publish %d job event(s)", len(events))
