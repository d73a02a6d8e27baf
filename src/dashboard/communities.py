"""The communities page: the stored communities with their statistics, and "parse now".

The statistics are the ones `update_statistics` stores (`src.maintenance`, as `GET /stats`
shows them): shared data, the same for every signed-in viewer. "Parse now" queues
`parse_vk_comments` exactly as `POST /api/v1/comments/parse/vk/async` does, under the viewer's
principal: the job is theirs (their roles, priority ceiling and rate limit apply).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from src.arq.dependencies import ArqServiceDep, Webhook
from src.arq.endpoints import queue_job
from src.arq.exceptions import InvalidJobArguments, TaskForbidden
from src.dashboard.dependencies import CheckedFormDep, DatabaseDep, ViewerDep, field
from src.dashboard.pages import DashboardRoute, render
from src.dashboard.signin import PREFIX, see_other
from src.maintenance.statistics import CommunityStatsOut, list_statistics
from src.schemas import VK_ID_MAX

PARSE_TASK = "parse_vk_comments"
DEFAULT_LIMIT = 100  # the REST endpoint's default: the newest posts read
MAX_LIMIT = 10_000  # the task's bound (`PostLimit`); the job service checks it again
# What a redirect may tell the page: fixed texts chosen by key.
NOTICES = {
    "parse-refused": "The parse job was not queued: the number of posts must be 1 to 10000, "
    "and you must be allowed to run parse_vk_comments.",
}

CommunityPath = Annotated[int, Path(gt=0, le=VK_ID_MAX)]

router = APIRouter(route_class=DashboardRoute)


@router.get("/communities")
async def communities_page(request: Request, viewer: ViewerDep, db: DatabaseDep) -> Response:
    """Every stored community's statistics, each with a "parse now" form."""
    rows = [CommunityStatsOut.model_validate(row) for row in await list_statistics(db)]
    return render(
        request,
        "communities.html",
        {
            "principal": viewer.principal,
            "csrf": viewer.session.csrf,
            "notice": NOTICES.get(request.query_params.get("notice", "")),
            "communities": rows,
            "computed_at": max((row.computed_at for row in rows), default=None),
            "default_limit": DEFAULT_LIMIT,
            "max_limit": MAX_LIMIT,
        },
    )


@router.post("/communities/{community_id}/parse")
async def parse_now(
    viewer: ViewerDep, form: CheckedFormDep, service: ArqServiceDep, community_id: CommunityPath
) -> Response:
    """Queue `parse_vk_comments` for the community; the new job's page."""
    raw = (field(form, "limit") or "").strip()
    try:
        limit = int(raw) if raw else DEFAULT_LIMIT
    except ValueError:
        return see_other(f"{PREFIX}/communities?notice=parse-refused")
    params = {"group_id": community_id, "screen_name": None, "limit": limit, "since": None}
    try:
        queued = await queue_job(service, viewer.principal, Webhook(), PARSE_TASK, params)
    except (InvalidJobArguments, TaskForbidden):
        return see_other(f"{PREFIX}/communities?notice=parse-refused")
    return see_other(f"{PREFIX}/jobs/{queued.data.job_id}")
