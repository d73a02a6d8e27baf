"""REST API of the comments pipeline: `/api/v1/comments/*`.

Comments are public VK data: any authenticated caller may read them. The parse jobs follow the
job API's rules (they belong to whoever started them). Every integer parameter is bounded and
every id fits in BIGINT, so a bad value is a 422 here, not an error in the database or the queue.
"""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response, status

from src.admin.reports import MAX_PERIOD_DAYS, ReportFormat, get_report, list_reports
from src.admin.statistics import CommunityStatsOut, list_statistics
from src.arq.dependencies import ArqServiceDep, Webhook, WebhookDep
from src.arq.schemas import JOB_ID_PATTERN, MAX_OFFSET, EnqueueRequest
from src.arq.service import ArqService
from src.auth.dependencies import PrincipalDep
from src.auth.schemas import Principal
from src.comments import service
from src.comments.analysis import get_analysis, parse_ref, text_hash
from src.comments.dependencies import SessionDep
from src.comments.exceptions import AnalysisNotFound, CommentNotFound
from src.comments.schemas import (
    COMMENT_REF_PATTERN,
    COMMENT_REFS_PATTERN,
    VK_ID_MAX,
    AnalysisOut,
    CommentOut,
    CommentPage,
    IsoDatetime,
    JobAcceptedData,
    JobAcceptedResponse,
    ParseJobData,
    ParseJobResponse,
    ReportPage,
)
from src.comments.tasks import SCREEN_NAME
from src.openapi import SingleQueryValues

router = APIRouter(prefix="/api/v1/comments", tags=["comments"], dependencies=[SingleQueryValues])

# Every operation reads the database or Redis; the error statuses carry the `Error` shape.
STORED: dict[int | str, dict[str, Any]] = {
    503: {"description": "Redis or the database is unreachable; see Retry-After"},
}
QUEUED: dict[int | str, dict[str, Any]] = {
    **STORED,
    429: {"description": "Your enqueue rate limit was reached; see Retry-After"},
}
WEBHOOK_RULE = "`X-Notify-Secret` needs X-Notify-Url."
_GROUP_ID = Query(gt=0, le=VK_ID_MAX, description="the community's id")
_POST_ID = Query(gt=0, le=VK_ID_MAX, description="a post on the community's wall")
_COMMENT_IDS = Query(
    max_length=30_000,
    pattern=COMMENT_REFS_PATTERN,
    description="1 to 1000 comma-separated `{owner_id}_{comment_id}` references, e.g. "
    "`-1_25,-1_26`",
)
GroupId = Annotated[int, _GROUP_ID]
OptionalGroupId = Annotated[int | None, _GROUP_ID]
OptionalPostId = Annotated[int | None, _POST_ID]
CommentIds = Annotated[str, _COMMENT_IDS]
OptionalCommentIds = Annotated[str | None, _COMMENT_IDS]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]
Since = Annotated[IsoDatetime | None, Query(description="from this time on (ISO 8601)")]
Until = Annotated[IsoDatetime | None, Query(description="before this time (ISO 8601)")]


@router.post(
    "/parse/vk/async",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ParseJobResponse,
    responses=QUEUED,
    description="Queue `parse_vk_comments`: fetch a community's posts and all their comments."
    "\n\nRules the schema cannot state (a 422 names the rule broken): give either group_id or "
    f"screen_name. {WEBHOOK_RULE}",
)
async def parse_vk_async(
    arq_service: ArqServiceDep,
    principal: PrincipalDep,
    webhook: WebhookDep,
    group_id: OptionalGroupId = None,
    screen_name: Annotated[
        str | None,
        Query(pattern=SCREEN_NAME.pattern, description="or its short name, e.g. `apiclub`"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="newest posts to read")] = 100,
    since: Since = None,
) -> ParseJobResponse:
    """Queue `parse_vk_comments`: fetch a community's posts and all their comments."""
    kwargs = {"group_id": group_id, "screen_name": screen_name, "limit": limit, "since": since}
    job = await arq_service.enqueue(
        EnqueueRequest(
            function_name="parse_vk_comments",
            kwargs={key: value for key, value in kwargs.items() if value is not None},
            notify_url=webhook.url,
            notify_secret=webhook.secret,
        ),
        principal=principal,
    )
    target = f"community {group_id}" if group_id is not None else f"community {screen_name!r}"
    return ParseJobResponse(
        message=f"parsing of {target} queued",
        data=ParseJobData(
            job_id=job.job_id,
            function=job.function,
            group_id=group_id,
            screen_name=screen_name,
            limit=limit,
            status_url=job.status_url,
            result_url=job.result_url,
        ),
    )


async def _queue(
    arq_service: ArqService,
    principal: Principal,
    webhook: Webhook,
    function: str,
    params: dict[str, Any],
) -> JobAcceptedResponse:
    kwargs = {key: value for key, value in params.items() if value is not None}
    job = await arq_service.enqueue(
        EnqueueRequest(
            function_name=function,
            kwargs=kwargs,
            notify_url=webhook.url,
            notify_secret=webhook.secret,
        ),
        principal=principal,
    )
    return JobAcceptedResponse(
        message=f"{function} queued",
        data=JobAcceptedData(
            job_id=job.job_id,
            function=job.function,
            status_url=job.status_url,
            result_url=job.result_url,
            params=kwargs,
        ),
    )


def _refs(comment_ids: str | None) -> list[str] | None:
    if comment_ids is None:
        return None
    # A comment named twice is the same comment: once, in the order given.
    return list(dict.fromkeys(ref.strip() for ref in comment_ids.split(",")))


@router.post(
    "/analyze/async",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAcceptedResponse,
    responses=QUEUED,
    description="Queue `analyze_text_morphology` (stored per comment) or `extract_keywords` for "
    f"comments.\n\nRules the schema cannot state (a 422 names the rule broken): {WEBHOOK_RULE}",
)
async def analyze_async(
    arq_service: ArqServiceDep,
    principal: PrincipalDep,
    webhook: WebhookDep,
    comment_ids: CommentIds,
    analysis_type: Annotated[
        Literal["morphology", "keywords"], Query(description="what to compute")
    ] = "morphology",
) -> JobAcceptedResponse:
    """Queue `analyze_text_morphology` (stored per comment) or `extract_keywords` for comments."""
    function = "analyze_text_morphology" if analysis_type == "morphology" else "extract_keywords"
    params = {"comment_ids": _refs(comment_ids)}
    return await _queue(arq_service, principal, webhook, function, params)


@router.post(
    "/keywords/async",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAcceptedResponse,
    responses=QUEUED,
    description="Queue `extract_keywords` for a community (or one post, or a period) or for "
    "comments.\n\nRules the schema cannot state (a 422 names the rule broken): give either "
    "group_id (with post_id, since, until) or comment_ids; post_id needs the group_id of its "
    f"community. {WEBHOOK_RULE}",
)
async def keywords_async(
    arq_service: ArqServiceDep,
    principal: PrincipalDep,
    webhook: WebhookDep,
    group_id: OptionalGroupId = None,
    post_id: OptionalPostId = None,
    comment_ids: OptionalCommentIds = None,
    top_n: Annotated[int, Query(ge=1, le=200)] = 20,
    since: Since = None,
    until: Until = None,
) -> JobAcceptedResponse:
    """Queue `extract_keywords` for a community (or one post, or a period) or for comments."""
    params = {
        "group_id": group_id,
        "post_id": post_id,
        "comment_ids": _refs(comment_ids),
        "top_n": top_n,
        "since": since,
        "until": until,
    }
    return await _queue(arq_service, principal, webhook, "extract_keywords", params)


@router.post(
    "/cleanup/async",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAcceptedResponse,
    responses={**QUEUED, 403: {"description": "Needs the admin role"}},
    description="Queue `cleanup_old_data` (admin): comments, analyses and finished jobs past the "
    f"cut-off.\n\nRules the schema cannot state (a 422 names the rule broken): {WEBHOOK_RULE}",
)
async def cleanup_async(
    arq_service: ArqServiceDep,
    principal: PrincipalDep,
    webhook: WebhookDep,
    older_than_days: Annotated[int, Query(ge=1, le=36_500)],
    dry_run: Annotated[bool, Query(description="count only (the default)")] = True,
) -> JobAcceptedResponse:
    """Queue `cleanup_old_data` (admin): comments, analyses and finished jobs past the cut-off."""
    params = {"older_than_days": older_than_days, "dry_run": dry_run}
    return await _queue(arq_service, principal, webhook, "cleanup_old_data", params)


@router.post(
    "/report/async",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAcceptedResponse,
    responses=QUEUED,
    description="Queue `generate_report`; when complete, download it from `reports/{job_id}`."
    "\n\nRules the schema cannot state (a 422 names the rule broken): since must be before "
    f"until, and the period is at most {MAX_PERIOD_DAYS} days. {WEBHOOK_RULE}",
)
async def report_async(
    arq_service: ArqServiceDep,
    principal: PrincipalDep,
    webhook: WebhookDep,
    group_id: GroupId,
    since: Since = None,
    until: Until = None,
    report_format: Annotated[
        ReportFormat, Query(alias="format", description="the file's format")
    ] = ReportFormat.JSON,
    top_n: Annotated[int, Query(ge=1, le=200, description="authors, posts, keywords listed")] = 20,
) -> JobAcceptedResponse:
    """Queue `generate_report`; when complete, download it from `reports/{job_id}`."""
    params = {
        "group_id": group_id,
        "since": since,
        "until": until,
        "format": report_format,
        "top_n": top_n,
    }
    return await _queue(arq_service, principal, webhook, "generate_report", params)


# Declared before `/{comment_ref}`, which `/reports` would otherwise match.
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


# Declared before `/{comment_ref}/analysis`, which `/reports/analysis` would otherwise match.
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


@router.get("/stats", response_model=list[CommunityStatsOut], responses=STORED)
async def community_stats(session: SessionDep, principal: PrincipalDep) -> list[CommunityStatsOut]:
    """Per-community aggregates as of the last `update_statistics` run (see `computed_at`)."""
    rows = await list_statistics(session)
    return [CommunityStatsOut.model_validate(row) for row in rows]


@router.get("", response_model=CommentPage, responses=STORED)
async def list_comments(
    session: SessionDep,
    principal: PrincipalDep,
    group_id: OptionalGroupId = None,
    post_id: OptionalPostId = None,
    since: Since = None,
    until: Until = None,
    q: Annotated[
        str | None,
        # PostgreSQL text cannot hold NUL: refused here rather than by the database.
        Query(min_length=1, max_length=200, pattern=r"^[^\x00]+$", description="text contains"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> CommentPage:
    """Stored comments, newest first, filtered by community, post, period and text."""
    rows, total = await service.list_comments(
        session,
        owner_id=-group_id if group_id is not None else None,
        post_id=post_id,
        since=since,
        until=until,
        q=q,
        limit=limit,
        offset=offset,
    )
    return CommentPage(
        items=[CommentOut.model_validate(row) for row in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


CommentRef = Annotated[
    str,
    Path(
        pattern=COMMENT_REF_PATTERN,
        description="`{owner_id}_{comment_id}` as VK writes it, e.g. `-1_25`",
    ),
]


@router.get(
    "/{comment_ref}/analysis",
    response_model=AnalysisOut,
    responses={404: {"description": "No such comment, or not analysed yet"}, **STORED},
)
async def comment_analysis(
    session: SessionDep, principal: PrincipalDep, comment_ref: CommentRef
) -> AnalysisOut:
    """The stored morphology of a comment (see `analyze/async`)."""
    owner_id, comment_id = parse_ref(comment_ref)  # the path pattern checked the form
    comment = await service.get_comment(session, owner_id=owner_id, comment_id=comment_id)
    if comment is None:
        raise CommentNotFound(comment_ref)
    analysis = await get_analysis(session, owner_id=owner_id, comment_id=comment_id)
    if analysis is None:
        raise AnalysisNotFound(comment_ref)
    out = AnalysisOut.model_validate(analysis)
    out.stale = analysis.text_hash != text_hash(comment.text)
    return out


@router.get(
    "/{comment_ref}",
    response_model=CommentOut,
    responses={404: {"description": "No such comment"}, **STORED},
)
async def get_comment(
    session: SessionDep, principal: PrincipalDep, comment_ref: CommentRef
) -> CommentOut:
    """One stored comment."""
    owner_id, comment_id = parse_ref(comment_ref)  # the path pattern checked the form
    comment = await service.get_comment(session, owner_id=owner_id, comment_id=comment_id)
    if comment is None:
        raise CommentNotFound(comment_ref)
    return CommentOut.model_validate(comment)
