"""REST API of comment reports: queue one, list yours, download one (`/api/v1/comments/…`)."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from src.arq.dependencies import ArqServiceDep, WebhookDep
from src.arq.endpoints import QUEUED, STORED, WEBHOOK_RULE, queue_job
from src.arq.schemas import JOB_ID_PATTERN, JobAcceptedResponse
from src.auth.dependencies import PrincipalDep
from src.comments.dependencies import SessionDep
from src.openapi import SingleQueryValues
from src.reports.schemas import MAX_PERIOD_DAYS, ReportFormat, ReportPage
from src.reports.storage import get_report, list_reports
from src.reports.tasks import FileFormat, ReportTopN
from src.schemas import Offset, OptionalGroupId, Since, Until, VkId

# Under the comments prefix (and tag), as before the split: the URLs stay the same. Included
# before the comments router, whose `/{comment_ref}` would otherwise match `/reports`.
router = APIRouter(prefix="/api/v1/comments", tags=["comments"], dependencies=[SingleQueryValues])


@router.post(
    "/report/async",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAcceptedResponse,
    responses=QUEUED,
    description="Queue `generate_report` for a community (without group_id: all stored "
    "communities); when complete, download it from `reports/{job_id}`.\n\nRules the schema "
    "cannot state (a 422 names the rule broken): since must be before until, and the period is "
    f"at most {MAX_PERIOD_DAYS} days. {WEBHOOK_RULE}",
)
async def report_async(
    arq_service: ArqServiceDep,
    principal: PrincipalDep,
    webhook: WebhookDep,
    group_id: Annotated[
        VkId | None, Query(description="the community's id; unset: all stored communities")
    ] = None,
    since: Since = None,
    until: Until = None,
    report_format: Annotated[FileFormat, Query(alias="format")] = ReportFormat.JSON,
    top_n: Annotated[ReportTopN, Query(description="authors, posts, keywords listed")] = 20,
) -> JobAcceptedResponse:
    """Queue `generate_report`; when complete, download it from `reports/{job_id}`."""
    params = {
        "group_id": group_id,
        "since": since,
        "until": until,
        "format": report_format,
        "top_n": top_n,
    }
    return await queue_job(arq_service, principal, webhook, "generate_report", params)


@router.get("/reports", response_model=ReportPage, responses=STORED)
async def reports_list(
    session: SessionDep,
    principal: PrincipalDep,
    group_id: OptionalGroupId = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> ReportPage:
    """Your reports (an admin's: everyone's), newest first, without their content."""
    items, total = await list_reports(
        session, principal=principal, group_id=group_id, limit=limit, offset=offset
    )
    return ReportPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/reports/{report_id}",
    response_class=Response,
    responses={
        200: {
            "description": "The report file (an attachment)",
            "content": {"application/json": {}, "text/csv": {}, "text/html": {}},
        },
        404: {"description": "No such report, or someone else's"},
        409: {"description": "Your report's job has not finished yet"},
        **STORED,
    },
)
async def download_report(
    session: SessionDep,
    principal: PrincipalDep,
    report_id: Annotated[
        str, Path(pattern=JOB_ID_PATTERN, description="the id of the `generate_report` job")
    ],
) -> Response:
    """A report made by `report/async`: yours, or anyone's for an admin."""
    report = await get_report(session, report_id, principal=principal)
    return Response(
        content=report.content,
        media_type=report.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{report.filename}"',
            "X-Content-Type-Options": "nosniff",
            # The page needs its inline styles only: no scripts, no requests.
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "Cache-Control": "private, no-cache",
        },
    )
