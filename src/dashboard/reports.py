"""The reports page: the viewer's stored reports (an admin's: everyone's, with their owners, or
one owner's), their downloads, and a form that queues a new one.

Reading goes through `src.reports.storage` with the viewer's principal, so the REST rules hold:
a user's reports are their own, and someone else's report is answered like a missing one (the
same 404 page). A report is queued exactly as `POST /api/v1/comments/report/async` does, under
the viewer's principal, and the browser goes to the new job's page.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from src.arq.dependencies import ArqServiceDep, Webhook
from src.arq.endpoints import queue_job
from src.arq.exceptions import InvalidJobArguments, TaskForbidden
from src.dashboard.dependencies import (
    CheckedFormDep,
    DashboardDep,
    DatabaseDep,
    JobIdPath,
    OwnerQuery,
    ViewerDep,
    field,
)
from src.dashboard.pages import DashboardRoute, render
from src.dashboard.signin import PREFIX, see_other
from src.maintenance.statistics import CommunityStatsOut, list_statistics
from src.reports.schemas import ReportFormat
from src.reports.storage import REPORT_TASK, get_report, list_reports

# What a redirect may tell the page: fixed texts chosen by key.
NOTICES = {
    "report-refused": "The report was not queued: choose a community (or all) and a format, "
    "and you must be allowed to run generate_report.",
}
# The REST download's headers: an attachment whose HTML may style itself, nothing more.
DOWNLOAD_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Cache-Control": "private, no-cache",
}

_GROUP_ID = re.compile(r"[0-9]{1,19}")
DEFAULT_TOP_N = 20  # the REST endpoint's default: authors, posts and keywords listed

router = APIRouter(route_class=DashboardRoute)


@router.get("/reports")
async def reports_page(
    request: Request,
    viewer: ViewerDep,
    db: DatabaseDep,
    dashboard: DashboardDep,
    owner: OwnerQuery = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    """The viewer's reports (an admin's: everyone's, or one owner's), newest first, in pages;
    the form of a new one."""
    owner = (owner or None) if viewer.principal.is_admin else None
    size = dashboard.settings.page_size
    items, total = await list_reports(
        db, principal=viewer.principal, owner=owner, limit=size, offset=(page - 1) * size
    )
    communities = [CommunityStatsOut.model_validate(row) for row in await list_statistics(db)]
    pages = max(1, -(-total // size))
    filters = {"owner": owner} if owner else {}
    return render(
        request,
        "reports.html",
        {
            "principal": viewer.principal,
            "csrf": viewer.session.csrf,
            "notice": NOTICES.get(request.query_params.get("notice", "")),
            "reports": items,
            "total": total,
            "owner": owner,
            "names": {row.community_id: row.name for row in communities},
            "communities": communities,
            "formats": [item.value for item in ReportFormat],
            "page": page,
            "pages": pages,
            "prev_url": f"?{urlencode({**filters, 'page': page - 1})}" if page > 1 else None,
            "next_url": f"?{urlencode({**filters, 'page': page + 1})}" if page < pages else None,
        },
    )


@router.get("/reports/{report_id}")
async def download(viewer: ViewerDep, db: DatabaseDep, report_id: JobIdPath) -> Response:
    """The stored file, if it is the viewer's (an admin's: anyone's); else the 404 page."""
    report = await get_report(db, report_id, principal=viewer.principal)
    return Response(
        content=report.content,
        media_type=report.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{report.filename}"',
            **DOWNLOAD_HEADERS,
        },
    )


@router.post("/reports")
async def generate(viewer: ViewerDep, form: CheckedFormDep, service: ArqServiceDep) -> Response:
    """Queue `generate_report` for one community or all; the new job's page."""
    group = (field(form, "group_id") or "").strip()
    report_format = field(form, "format") or ReportFormat.JSON.value
    if (group and not _GROUP_ID.fullmatch(group)) or report_format not in set(ReportFormat):
        return see_other(f"{PREFIX}/reports?notice=report-refused")
    params = {
        "group_id": int(group) if group else None,
        "since": None,
        "until": None,
        "format": report_format,
        "top_n": DEFAULT_TOP_N,
    }
    try:
        queued = await queue_job(service, viewer.principal, Webhook(), REPORT_TASK, params)
    except (InvalidJobArguments, TaskForbidden):
        return see_other(f"{PREFIX}/reports?notice=report-refused")
    return see_other(f"{PREFIX}/jobs/{queued.data.job_id}")
