"""REST API of the job module: `/api/v1/arq/*`."""

import hashlib
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from src.arq.dependencies import ArqServiceDep, StreamHubDep
from src.arq.registry import TaskRegistry
from src.arq.schemas import (
    JOB_ID_PATTERN,
    STATS_DEFAULT_HOURS,
    STATS_MAX_DAYS,
    EnqueueRequest,
    EnqueueResponse,
    HealthResponse,
    JobPage,
    JobResultResponse,
    JobStatus,
    JobStatusResponse,
    QueueInfo,
    QueueStats,
    TaskInfo,
)
from src.arq.stats_measures import PRECISION
from src.arq.streams import JobStream, StreamEnd
from src.auth.dependencies import PrincipalDep
from src.openapi import SingleQueryValues
from src.schemas import IsoDatetime, Offset

logger = logging.getLogger(__name__)

JobIdPath = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="the job's id")]

# Every error status carries the `Error` shape (see `src.openapi`, which also adds 401, 422, and
# 400/413 where a body is read).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such job, or not yours"},
    503: {"description": "Redis or the database is unreachable; see Retry-After"},
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: ERROR_RESPONSES[503]}
ENQUEUE_ERRORS: dict[int | str, dict[str, Any]] = {
    **UNAVAILABLE,
    403: {"description": "The task needs the admin role"},
    429: {"description": "Your enqueue rate limit was reached; see Retry-After"},
}
# PostgreSQL text cannot hold NUL: a filter with one is refused here, not by the database.
NO_NUL = r"^[^\x00]*$"
Limit = Annotated[int, Query(ge=1, le=500, description="items in the page")]


@dataclass(frozen=True, slots=True)
class StatsWindow:
    """The window of `/stats`, in UTC: `[since, until)`."""

    since: datetime
    until: datetime


# The window's rules that a schema cannot state; each message is one a 422 gives.
BEFORE_UNTIL = "must be before until"
AT_MOST = f"must be at most {STATS_MAX_DAYS} days before until"
IN_RANGE = "must be a time within the years 1 to 9999 in UTC"
_EARLIEST = datetime.min.replace(tzinfo=UTC)


STATS_DESCRIPTION = (
    "Statistics of your jobs enqueued in [since, until), per task and in all (an admin's: "
    "everyone's, or one owner's): counts by status, success rate (complete / finished), the "
    "50th, 95th and 99th percentiles of run time and of queue wait in seconds (null without a "
    "sample), and retries.\n\nCounts, success rate and retries are exact. Percentiles of a "
    "window that spans whole hours come from the hourly, daily and monthly rollup's "
    f"log-bucketed histograms: within {PRECISION:.0%} (relative) of the exact value; a window "
    "read from the history alone (inside one hour, or on SQLite) has exact ones.\n\n"
    "Rules the schema cannot state (a 422 names the parameter): since "
    f"{BEFORE_UNTIL}, and {AT_MOST}; since and until each {IN_RANGE}."
)


def _window_error(name: str, msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", name), "msg": msg, "type": "value_error"}])


def _utc(value: datetime, name: str) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
        raise _window_error(name, IN_RANGE) from None


def stats_window(
    since: Annotated[
        IsoDatetime | None,
        Query(
            description="jobs enqueued from this time on (ISO 8601 with a timezone); default: "
            f"{STATS_DEFAULT_HOURS} hours before until"
        ),
    ] = None,
    until: Annotated[
        IsoDatetime | None,
        Query(description="jobs enqueued before this time (ISO 8601); default: now"),
    ] = None,
) -> StatsWindow:
    """`since` and `until` of `/stats`, defaults filled in; a 422 naming the one at fault."""
    end = _utc(until, "until") if until is not None else datetime.now(UTC)
    if since is None:
        return StatsWindow(end - min(timedelta(hours=STATS_DEFAULT_HOURS), end - _EARLIEST), end)
    start = _utc(since, "since")
    if start >= end:
        raise _window_error("since", BEFORE_UNTIL)
    if end - start > timedelta(days=STATS_MAX_DAYS):
        raise _window_error("since", AT_MOST)
    return StatsWindow(start, end)


def build_router(registry: TaskRegistry, *, batch_limit: int | None = None) -> APIRouter:
    """The job API for the tasks of `registry` (`src.openapi` documents each task's request);
    `batch_limit` (ARQ_BATCH_LIMIT) is checked while a batch is validated, not after all of it
    was."""
    router = APIRouter(prefix="/api/v1/arq", tags=["jobs"])

    @router.post(
        "/enqueue",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=EnqueueResponse,
        responses={
            **ENQUEUE_ERRORS,
            409: {"description": "job_id already in use; carries its status_url"},
        },
    )
    async def enqueue(
        service: ArqServiceDep, principal: PrincipalDep, request: EnqueueRequest
    ) -> EnqueueResponse:
        """Queue one job. Arguments are validated against the task's declaration now: the body's
        schema is one per task (`function_name` picks it); rules that JSON Schema cannot state
        are in each task's `kwargs` description, and a 422 names the rule broken. Text in the
        arguments (values and keys) must not contain the NUL character (U+0000): the history
        cannot store it."""
        return await service.enqueue(request, principal=principal)

    @router.post(
        "/enqueue-batch",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=list[EnqueueResponse],
        responses={
            **ENQUEUE_ERRORS,
            409: {"description": "a job_id is in use, or given twice in the batch"},
        },
    )
    async def enqueue_batch(
        service: ArqServiceDep,
        principal: PrincipalDep,
        requests: Annotated[list[EnqueueRequest], Body(min_length=1, max_length=batch_limit)],
    ) -> list[EnqueueResponse]:
        """Queue several jobs: all are validated first, and either all are queued or none.
        Text in the arguments (values and keys) must not contain the NUL character (U+0000).
        A batch holds at most ARQ_BATCH_LIMIT jobs, and at most ARQ_ENQUEUE_RATE_LIMIT while a
        rate limit is on (the smaller applies; the 422 names it)."""
        return await service.enqueue_batch(requests, principal=principal)

    @router.get("/status/{job_id}", response_model=JobStatusResponse, responses=ERROR_RESPONSES)
    async def job_status(
        service: ArqServiceDep, principal: PrincipalDep, job_id: JobIdPath
    ) -> JobStatusResponse:
        """Status, progress, tries and timestamps of a job; its result or error once finished."""
        return await service.get_job_status(job_id, principal=principal)

    @router.get(
        "/result/{job_id}",
        response_model=JobResultResponse,
        responses={
            **ERROR_RESPONSES,
            202: {"model": JobStatusResponse, "description": "Not finished yet: the status"},
        },
    )
    async def job_result(service: ArqServiceDep, principal: PrincipalDep, job_id: JobIdPath) -> Any:
        """200 with the result (or error) once the job has finished; 202 with its status before.

        A failed or aborted job is finished, so its result is a 200 with `success: false` and
        the error: the request for the result succeeded, the job did not.
        """
        outcome = await service.get_job_result(job_id, principal=principal)
        if isinstance(outcome, JobStatusResponse):
            return JSONResponse(
                status_code=status.HTTP_202_ACCEPTED, content=outcome.model_dump(mode="json")
            )
        return outcome

    @router.delete(
        "/abort/{job_id}",
        response_model=JobStatusResponse,
        responses={**ERROR_RESPONSES, 409: {"description": "The job has already finished"}},
    )
    async def abort(
        service: ArqServiceDep, principal: PrincipalDep, job_id: JobIdPath
    ) -> JobStatusResponse:
        """Abort a job: a waiting one never runs; a running one is cancelled within 2 s."""
        return await service.abort_job(job_id, principal=principal)

    @router.get(
        "/status/{job_id}/stream",
        response_class=EventSourceResponse,
        responses={
            **ERROR_RESPONSES,
            200: {
                "content": {"text/event-stream": {}},
                "description": "Server-Sent Events: one `status` event per change, ending when "
                "the job finishes (or after ARQ_STREAM_MAX_SECONDS with a `retry:` hint)",
            },
            429: {"description": "You hold ARQ_STREAMS_PER_OWNER open streams; see Retry-After"},
            503: {
                "description": "Redis or the database is unreachable, or this server holds "
                "ARQ_STREAMS_PER_PROCESS open streams; see Retry-After"
            },
        },
    )
    async def job_status_stream(
        hub: StreamHubDep,
        principal: PrincipalDep,
        job_id: JobIdPath,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> EventSourceResponse:
        """Live status: an SSE `status` event now and after each change (progress included),
        until the job finishes. On reconnect, send `Last-Event-ID` to skip a state you have."""
        stream = await hub.open(job_id, principal=principal)  # 404/429/503 before it starts
        return StatusEvents(stream, last_event_id)

    @router.get(
        "/jobs", response_model=JobPage, responses=UNAVAILABLE, dependencies=[SingleQueryValues]
    )
    async def list_jobs(
        service: ArqServiceDep,
        principal: PrincipalDep,
        status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
        function: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
        owner: Annotated[
            str | None,
            Query(max_length=100, pattern=NO_NUL, description="admins only: one owner's jobs"),
        ] = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> JobPage:
        """Your jobs, newest first (an admin sees everyone's)."""
        return await service.list_jobs(
            principal=principal,
            status=status_filter,
            function=function,
            owner=owner,
            limit=limit,
            offset=offset,
        )

    @router.get(
        "/failed", response_model=JobPage, responses=UNAVAILABLE, dependencies=[SingleQueryValues]
    )
    async def failed_jobs(
        service: ArqServiceDep,
        principal: PrincipalDep,
        function: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> JobPage:
        """Dead letters: failed jobs with their error and tries (an admin sees everyone's)."""
        return await service.list_failed(
            principal=principal, function=function, limit=limit, offset=offset
        )

    @router.post(
        "/retry/{job_id}",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=JobStatusResponse,
        responses={**ERROR_RESPONSES, 409: {"description": "The job is not failed or aborted"}},
    )
    async def retry(
        service: ArqServiceDep, principal: PrincipalDep, job_id: JobIdPath
    ) -> JobStatusResponse:
        """Queue a failed or aborted job again under its id; earlier rounds stay in `attempts`."""
        return await service.retry_job(job_id, principal=principal)

    @router.get("/queue/info", response_model=QueueInfo, responses=UNAVAILABLE)
    async def queue_info(service: ArqServiceDep, principal: PrincipalDep) -> QueueInfo:
        """Queue depth, jobs by task, live workers and the last hour's outcomes."""
        return await service.queue_info()

    @router.get(
        "/stats",
        response_model=QueueStats,
        responses=UNAVAILABLE,
        dependencies=[SingleQueryValues],
        description=STATS_DESCRIPTION,
    )
    async def queue_stats(
        service: ArqServiceDep,
        principal: PrincipalDep,
        window: Annotated[StatsWindow, Depends(stats_window)],
        function: Annotated[
            str | None, Query(max_length=100, pattern=NO_NUL, description="one task's jobs")
        ] = None,
        owner: Annotated[
            str | None,
            Query(max_length=100, pattern=NO_NUL, description="admins only: one owner's jobs"),
        ] = None,
    ) -> QueueStats:
        """Statistics of your jobs (an admin's: everyone's) enqueued in a window."""
        return await service.queue_stats(
            principal=principal,
            since=window.since,
            until=window.until,
            function=function,
            owner=owner,
        )

    @router.get("/tasks", response_model=list[TaskInfo])
    async def tasks(service: ArqServiceDep, principal: PrincipalDep) -> list[TaskInfo]:
        """The tasks you may enqueue, with the JSON schema of their arguments."""
        return service.tasks(principal=principal)

    @router.get(
        "/health",
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse, "description": "Redis or database down"}},
    )
    async def health(service: ArqServiceDep, response: Response) -> HealthResponse:
        """Liveness of Redis, the database and the workers. Needs no credential."""
        report = await service.health()
        if not report.healthy:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return report

    return router


KEEP_ALIVE_SECONDS = 15.0
# What the client's EventSource waits before reconnecting: sent first, as today, and again
# (spread out, so that streams opened together do not all come back at once) when the server
# ends a stream that the client should resume.
RETRY_MS = 2000
RESUME_RETRY_MS = (1000, 3000)
# A client that stops reading (its socket buffers full) is dropped after this long.
SEND_TIMEOUT_SECONDS = 30.0
SEP = "\n"


class StatusEvents(EventSourceResponse):
    """The SSE response of one `JobStream`: pings, disconnect detection and shutdown come from
    sse-starlette; the stream's place under the caps is given back however the response ends
    (disconnect, job finished, max life, shutdown, a client that stopped reading)."""

    def __init__(self, stream: JobStream, last_event_id: str | None) -> None:
        self.stream = stream
        super().__init__(
            _events(stream, last_event_id),
            headers={"Cache-Control": "no-cache"},
            ping=KEEP_ALIVE_SECONDS,
            ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep=SEP),
            sep=SEP,
            send_timeout=SEND_TIMEOUT_SECONDS,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            logger.info("status stream of job %s: the client stopped reading", self.stream.job_id)
        finally:
            self.stream.close()


def _event(update: JobStatusResponse) -> ServerSentEvent:
    return ServerSentEvent(update.model_dump_json(), event="status", id=_event_id(update), sep=SEP)


def _event_id(update: JobStatusResponse) -> str:
    # The state itself names the event, so a reconnecting client that has it is not sent it again.
    key = (
        f"{update.status}|{update.progress}|{update.message}|{update.tries}|"
        f"{update.scheduled_for.isoformat()}"
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


async def _events(stream: JobStream, last_event_id: str | None) -> AsyncIterator[ServerSentEvent]:
    try:
        yield ServerSentEvent(retry=RETRY_MS, sep=SEP)
        if _event_id(stream.first) != last_event_id:
            yield _event(stream.first)
        async for update in stream.updates():
            yield _event(update)
        if stream.ended_by in (StreamEnd.MAX_LIFE, StreamEnd.CLOSED):
            yield ServerSentEvent(
                comment="stream life over: reconnect with Last-Event-ID to resume",
                retry=random.randint(*RESUME_RETRY_MS),
                sep=SEP,
            )
    finally:
        stream.close()
