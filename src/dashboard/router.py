"""The dashboard's pages at `/dashboard`: overview, jobs, a job, dead letters (`router` also
takes in the sign-in, live, enqueue, communities and reports routes, each in its module).

Routes read the viewer from the session cookie, call the job service (the same methods as the
REST endpoints, with the viewer's principal: its ownership and role rules apply unchanged), and
render a template. Every POST carries the session's CSRF token; each answers with a redirect
(post/redirect/get) whose notice is one of `NOTICES`, never text from the request.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import Response

from src.arq.dependencies import ArqServiceDep
from src.arq.exceptions import JobConflict, JobNotFound, TaskForbidden
from src.arq.schemas import JOB_ID_PATTERN, JobStatus
from src.auth.schemas import ApiKey
from src.config import Environment
from src.dashboard import charts, communities, enqueue, live, reports, signin, views
from src.dashboard.config import SECRET_MIN_LENGTH, DashboardSettings
from src.dashboard.dependencies import (
    CheckedFormDep,
    Dashboard,
    DashboardDep,
    JobIdPath,
    OwnerQuery,
    Viewer,
    ViewerDep,
    field,
)
from src.dashboard.pages import DashboardRoute, not_found, render
from src.dashboard.session import SessionCodec
from src.dashboard.signin import PREFIX, see_other

logger = logging.getLogger("src.dashboard")

TaskQuery = Annotated[str | None, Query(max_length=100, pattern=r"^[^\x00]*$")]
PageQuery = Annotated[int, Query(ge=1, le=1_000_000)]
_JOB_ID = re.compile(JOB_ID_PATTERN)
# What a redirect may tell the next page: fixed texts chosen by key.
NOTICES = {
    "aborted": "The job was aborted (or is being stopped).",
    "abort-late": "The job had already finished: nothing to abort.",
    "retried": "The job was queued again.",
    "retry-refused": "This job cannot be retried now (not failed or aborted, or not allowed).",
}

page_routes = APIRouter(route_class=DashboardRoute)


def _page(request: Request, template: str, viewer: Viewer, **context: Any) -> Response:
    return render(
        request,
        template,
        {
            "principal": viewer.principal,
            "csrf": viewer.session.csrf,
            "notice": NOTICES.get(request.query_params.get("notice", "")),
            **context,
        },
    )


@page_routes.get("/")
async def overview_page(
    request: Request, viewer: ViewerDep, service: ArqServiceDep, owner: OwnerQuery = None
) -> Response:
    """Queue depth, workers, the last hour and day, dead letters, schedules."""
    data = await views.overview(service, viewer.principal, owner=owner or None)
    return _page(
        request,
        "overview.html",
        viewer,
        data=data,
        waiting=views.waiting_by_priority(data.gauges),
        charts={
            "hour": (
                charts.throughput_chart(data.hour, title="Finished jobs, last hour (5 min)"),
                charts.failure_rate_chart(data.hour, title="Failure rate, last hour (5 min)"),
                charts.totals(data.hour),
            ),
            "day": (
                charts.throughput_chart(data.day, title="Finished jobs, last day (hourly)"),
                charts.failure_rate_chart(data.day, title="Failure rate, last day (hourly)"),
                charts.totals(data.day),
            ),
        },
    )


@page_routes.get("/jobs")
async def jobs_page(
    request: Request,
    viewer: ViewerDep,
    service: ArqServiceDep,
    dashboard: DashboardDep,
    status: Annotated[str | None, Query(max_length=20)] = None,
    task: TaskQuery = None,
    owner: OwnerQuery = None,
    period: Annotated[str, Query(max_length=10)] = "all",
    page: PageQuery = 1,
) -> Response:
    """Jobs, newest first, filtered and paged."""
    status_filter = JobStatus(status) if status in set(JobStatus) else None
    period = period if period in views.PERIODS else "all"
    owner = (owner or None) if viewer.principal.is_admin else None
    size = dashboard.settings.page_size
    listing = await views.jobs(
        service,
        viewer.principal,
        status=status_filter,
        function=task or None,
        owner=owner,
        period=period,
        page=page,
        page_size=size,
    )
    filters = {
        key: value
        for key, value in (
            ("status", status_filter.value if status_filter else None),
            ("task", task or None),
            ("owner", owner),
            ("period", period if period != "all" else None),
        )
        if value
    }
    pages = max(1, -(-listing.total // size))
    # The rows still moving follow their jobs on one stream (see `live.rows_events`).
    moving = [("job", item.job_id) for item in listing.items if not item.status.finished]
    return _page(
        request,
        "jobs.html",
        viewer,
        listing=listing,
        filters=filters,
        rows_stream_url=f"{PREFIX}/events?{urlencode(moving)}" if moving else None,
        statuses=[status.value for status in JobStatus],
        tasks=views.task_names(service, viewer.principal),
        periods=views.PERIOD_LABELS,
        period=period,
        page=page,
        pages=pages,
        prev_url=f"?{urlencode({**filters, 'page': page - 1})}" if page > 1 else None,
        next_url=f"?{urlencode({**filters, 'page': page + 1})}" if page < pages else None,
    )


@page_routes.get("/jobs/{job_id}")
async def job_page(
    request: Request, viewer: ViewerDep, service: ArqServiceDep, job_id: JobIdPath
) -> Response:
    """One job: arguments, status, live progress, tries, timings, result or error, actions."""
    view = await views.job(service, viewer.principal, job_id)
    return _page(
        request,
        "job.html",
        viewer,
        job=view,
        args_json=json.dumps(view.args, indent=2, ensure_ascii=False, sort_keys=True),
        result_json=json.dumps(view.status.result, indent=2, ensure_ascii=False, default=str),
    )


@page_routes.post("/jobs/{job_id}/abort")
async def abort(
    viewer: ViewerDep, form: CheckedFormDep, service: ArqServiceDep, job_id: JobIdPath
) -> Response:
    """Abort a waiting or running job (the REST `DELETE /abort/{id}`)."""
    try:
        status = await service.abort_job(job_id, principal=viewer.principal)
        notice = "aborted"
    except JobConflict:
        status = await service.get_job_status(job_id, principal=viewer.principal)
        notice = "abort-late"
    return see_other(f"{PREFIX}/jobs/{status.job_id}?notice={notice}")


@page_routes.post("/jobs/{job_id}/retry")
async def retry(
    viewer: ViewerDep, form: CheckedFormDep, service: ArqServiceDep, job_id: JobIdPath
) -> Response:
    """Queue a failed or aborted job again (the REST `POST /retry/{id}`)."""
    try:
        status = await service.retry_job(job_id, principal=viewer.principal)
        notice = "retried"
    except (JobConflict, TaskForbidden):
        status = await service.get_job_status(job_id, principal=viewer.principal)
        notice = "retry-refused"
    return see_other(f"{PREFIX}/jobs/{status.job_id}?notice={notice}")


@page_routes.get("/dead-letters")
async def dead_letters_page(
    request: Request,
    viewer: ViewerDep,
    service: ArqServiceDep,
    dashboard: DashboardDep,
    task: TaskQuery = None,
    owner: OwnerQuery = None,
    page: PageQuery = 1,
    retried: Annotated[int | None, Query(ge=0, le=100_000)] = None,
    refused: Annotated[int | None, Query(ge=0, le=100_000)] = None,
) -> Response:
    """Failed jobs with their error and tries; retry one or a selection."""
    owner = (owner or None) if viewer.principal.is_admin else None
    size = dashboard.settings.page_size
    listing = await views.jobs(
        service,
        viewer.principal,
        status=JobStatus.FAILED,
        function=task or None,
        owner=owner,
        period="all",
        page=page,
        page_size=size,
    )
    filters = {key: value for key, value in (("task", task or None), ("owner", owner)) if value}
    pages = max(1, -(-listing.total // size))
    return _page(
        request,
        "dead_letters.html",
        viewer,
        listing=listing,
        filters=filters,
        tasks=views.task_names(service, viewer.principal),
        page=page,
        pages=pages,
        retried=retried,
        refused=refused,
        prev_url=f"?{urlencode({**filters, 'page': page - 1})}" if page > 1 else None,
        next_url=f"?{urlencode({**filters, 'page': page + 1})}" if page < pages else None,
    )


@page_routes.post("/dead-letters/retry")
async def retry_dead_letters(
    viewer: ViewerDep, form: CheckedFormDep, service: ArqServiceDep
) -> Response:
    """Retry the job of the row's button (`only`), or every selected one (`job_id`)."""
    only = field(form, "only")
    chosen = [only] if only else form.get("job_id", [])
    retried = refused = 0
    for job_id in dict.fromkeys(chosen):  # each once, in order
        if not _JOB_ID.fullmatch(job_id):
            refused += 1
            continue
        try:
            await service.retry_job(job_id, principal=viewer.principal)
            retried += 1
        except (JobConflict, JobNotFound, TaskForbidden):
            refused += 1
    return see_other(f"{PREFIX}/dead-letters?{urlencode({'retried': retried, 'refused': refused})}")


router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)
router.include_router(signin.router)
router.include_router(live.router)
router.include_router(enqueue.router)
router.include_router(communities.router)
router.include_router(reports.router)
router.include_router(page_routes)


@router.get("/{rest:path}")
async def unknown(request: Request, rest: str) -> Response:
    """Any other dashboard path: the 404 page."""
    return not_found(request)


def install(
    app: FastAPI, settings: DashboardSettings, *, keys: list[ApiKey], environment: Environment
) -> bool:
    """Serve the dashboard from `app` if the settings allow it here; whether it is served."""
    if not settings.serves(environment):
        if settings.enabled:
            logger.warning(
                "the dashboard is off: DASHBOARD_SECRET (%d+ characters) is needed to serve it "
                "when ENVIRONMENT=production",
                SECRET_MIN_LENGTH,
            )
        return False
    if settings.secret is None:
        logger.warning(
            "DASHBOARD_SECRET is not set: dashboard sessions are signed with a random secret of "
            "this process (they end when it stops; other API processes do not accept them)"
        )
    codec = SessionCodec(settings.signing_secret(), keys=keys)
    app.state.dashboard = Dashboard(settings=settings, codec=codec)
    app.include_router(router)
    return True
