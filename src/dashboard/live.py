"""The live parts: jobs' statuses as Server-Sent Events, and the dashboard's static files.

A job page's script listens to `/dashboard/jobs/{id}/events` (the session cookie is its
credential) and moves the progress bar; the stream comes from the app's `StreamHub`, as the
REST `/status/{id}/stream` does, under the same caps.

The jobs table follows the rows of its page that have not finished on ONE connection,
`/dashboard/events?job=<id>&job=<id>...`, which holds ONE place under those caps (a hub stream
of one of the rows), however many rows it follows: a page of 50 rows cannot use up an owner's
`ARQ_STREAMS_PER_OWNER`. The hub wakes that stream for every followed row's announcement
(`JobStream.also_watch`), so each row's change arrives as it happens, and re-reads them all now
and then as every stream does. A job id that is unknown or someone else's is never followed:
left out, or the 404 page when none is the viewer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from src.arq.dependencies import ArqServiceDep, StreamHubDep
from src.arq.exceptions import JobNotFound
from src.arq.schemas import JOB_ID_PATTERN, JobStatusResponse
from src.arq.service import ArqService
from src.arq.streams import READ_ERRORS, STREAM_IDLE_SECONDS, JobStream, StreamHub
from src.auth.schemas import Principal
from src.dashboard.dependencies import DashboardDep, JobIdPath, ViewerDep
from src.dashboard.pages import STATIC_DIR, DashboardRoute, format_when, not_found

logger = logging.getLogger("src.dashboard")

# A live status stream: keep-alive comments, and a client that stops reading is dropped.
KEEP_ALIVE_SECONDS = 15.0
SEND_TIMEOUT_SECONDS = 30.0
RECONNECT_MS = 2000  # what a browser waits before it reconnects a stream that ended early
# The jobs table's stream: how many reads run at once (each takes a connection of the API's
# database pool).
ROWS_READ_CONCURRENCY = 4
STATIC_FILES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
_JOB_ID = re.compile(JOB_ID_PATTERN)

router = APIRouter(route_class=DashboardRoute)


@router.get("/jobs/{job_id}/events")
async def job_events(
    viewer: ViewerDep, hub: StreamHubDep, job_id: JobIdPath
) -> EventSourceResponse:
    """The job's status live (Server-Sent Events) until it finishes: what the page updates."""
    stream = await hub.open(job_id, principal=viewer.principal)  # 404/429/503 before it starts
    return StatusEvents(stream, _events(stream))


@router.get("/events")
async def rows_events(
    viewer: ViewerDep,
    hub: StreamHubDep,
    service: ArqServiceDep,
    dashboard: DashboardDep,
    job: Annotated[list[str] | None, Query()] = None,
) -> EventSourceResponse:
    """The statuses of the listed jobs (a jobs page's rows) live, on one connection, until
    every one has finished; the viewer's jobs only (404 if none of them is)."""
    ids = [job_id for job_id in dict.fromkeys(job or ()) if _JOB_ID.fullmatch(job_id)]
    ids = ids[: dashboard.settings.page_size]
    stream, rest = await _open_first(hub, ids, viewer.principal)  # 404/429/503 before it starts
    try:
        found = await _read(service, viewer.principal, rest, strict=True)
    except BaseException:
        stream.close()
        raise
    watched = {stream.job_id: stream.first}
    for status in found.values():
        if status is not None:
            watched.setdefault(status.job_id, status)
    return StatusEvents(stream, _row_events(stream, watched, service, viewer.principal))


class StatusEvents(EventSourceResponse):
    """Status events (a job's, or a jobs page's rows'); the hub stream's place under the caps
    (`ARQ_STREAMS_PER_OWNER`, shared with the REST streams) is given back however the response
    ends."""

    def __init__(self, stream: JobStream, events: AsyncIterator[ServerSentEvent]) -> None:
        self.stream = stream
        super().__init__(
            events,
            headers={"Cache-Control": "no-cache"},
            ping=KEEP_ALIVE_SECONDS,
            send_timeout=SEND_TIMEOUT_SECONDS,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            logger.info("dashboard stream of %s: the client stopped reading", self.stream.job_id)
        finally:
            self.stream.close()


async def _events(stream: JobStream) -> AsyncIterator[ServerSentEvent]:
    try:
        yield ServerSentEvent(retry=RECONNECT_MS)
        yield _status_event(_status_fields(stream.first))
        async for update in stream.updates():
            yield _status_event(_status_fields(update))
    finally:
        stream.close()


async def _open_first(
    hub: StreamHub, ids: Sequence[str], principal: Principal
) -> tuple[JobStream, list[str]]:
    """A hub stream of the first of `ids` the viewer may see (the place the connection holds
    under the caps), and the ids after it; `JobNotFound` if there is none."""
    for index, job_id in enumerate(ids):
        try:
            return await hub.open(job_id, principal=principal), list(ids[index + 1 :])
        except JobNotFound:
            continue
    raise JobNotFound(ids[0] if ids else "")


async def _read(
    service: ArqService, principal: Principal, ids: Sequence[str], *, strict: bool
) -> dict[str, JobStatusResponse | None]:
    """Each job's status now, None for one that is unknown or not the viewer's. A read that
    fails (Redis or the database away) raises if `strict`, else leaves its job out."""
    limit = asyncio.Semaphore(ROWS_READ_CONCURRENCY)

    async def one(job_id: str) -> tuple[str, JobStatusResponse | None] | None:
        async with limit:
            try:
                return job_id, await service.get_job_status(job_id, principal=principal)
            except JobNotFound:
                return job_id, None
            except READ_ERRORS:
                if strict:
                    raise
                logger.debug("dashboard rows stream: re-read of %s failed", job_id)
                return None

    return dict(found for found in await asyncio.gather(*map(one, ids)) if found is not None)


async def _row_events(
    stream: JobStream,
    watched: dict[str, JobStatusResponse],
    service: ArqService,
    principal: Principal,
) -> AsyncIterator[ServerSentEvent]:
    """Each followed job's status now, then whenever it changes, until all have finished (an
    `end` event), the held stream's life is over or the server stops (the browser reconnects)."""
    loop = asyncio.get_running_loop()
    try:
        yield ServerSentEvent(retry=RECONNECT_MS)
        sent: dict[str, dict[str, Any]] = {}
        for status in watched.values():
            sent[status.job_id] = _row_fields(status)
            yield _status_event(sent[status.job_id])
        active = [job_id for job_id, status in watched.items() if not status.status.finished]
        # Woken by any followed row's announcement; every row is re-read now and then anyway
        # (the few changes nobody announces, as a deferred job coming due).
        stream.also_watch(active)
        # The first statuses were read before the rows were watched: read them all once more.
        next_round = loop.time()
        while active:
            if loop.time() >= stream.deadline:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(stream.deadline, next_round) - loop.time()):
                    await stream.wake.wait()
            if stream.hub.closed or stream.closed:
                return
            stream.wake.clear()  # before the reads: a change announced during them wakes again
            woken = stream.take_woken()
            if loop.time() >= next_round:
                due = list(active)
                next_round = loop.time() + _reread_every(stream)
            else:
                due = [job_id for job_id in active if job_id in woken]
            for job_id, current in (await _read(service, principal, due, strict=False)).items():
                if current is None or current.status.finished:
                    active.remove(job_id)  # finished, or its record is gone (cleanup)
                if current is not None and _row_fields(current) != sent[job_id]:
                    sent[job_id] = _row_fields(current)
                    yield _status_event(sent[job_id])
        yield ServerSentEvent("{}", event="end")  # every row has finished: no reconnecting
    finally:
        stream.close()


def _reread_every(stream: JobStream) -> float:
    """Seconds between re-reads of every followed row: the hub's safety net while its
    subscription is up, its polling period while it is down."""
    return STREAM_IDLE_SECONDS if stream.hub.connected else stream.hub.poll


def _status_fields(status: JobStatusResponse) -> dict[str, Any]:
    return {
        "status": status.status.value,
        "finished": status.status.finished,
        "progress": status.progress,
        "message": status.message or "",
        "tries": status.tries,
    }


def _row_fields(status: JobStatusResponse) -> dict[str, Any]:
    """A table row's fields: the job page's, which job, and when it finished (as shown)."""
    return {
        "job_id": status.job_id,
        **_status_fields(status),
        "finished_at": format_when(status.finished_at),
    }


def _status_event(data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(json.dumps(data), event="status")


@router.get("/static/{name}")
async def static(request: Request, name: str) -> Response:
    """The dashboard's stylesheet and script (files of the package: nothing from elsewhere)."""
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        return not_found(request)
    response = FileResponse(STATIC_DIR / name, media_type=media_type)
    response.headers["Cache-Control"] = "no-cache"
    return response
