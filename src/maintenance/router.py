"""REST API of maintenance: queue a cleanup, read community statistics, queue a community's
whole pipeline (parse, morphology, statistics, report: `/api/v1/comments/…`).

The pipeline lives here, above the packages of its steps (comments, reports): it names their
tasks and shares their arguments' limits.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from src.arq.dependencies import ArqServiceDep, WebhookDep
from src.arq.endpoints import QUEUED, STORED, WEBHOOK_RULE, queue_job
from src.arq.schemas import EnqueueRequest, JobAcceptedResponse
from src.auth.dependencies import PrincipalDep
from src.comments.dependencies import SessionDep
from src.comments.schemas import PipelineData, PipelineResponse
from src.comments.tasks import PostLimit
from src.maintenance.statistics import CommunityStatsOut, list_statistics
from src.maintenance.tasks import OlderThanDays
from src.openapi import SingleQueryValues
from src.reports.schemas import ReportFormat
from src.reports.tasks import REPORT_URL, FileFormat, ReportTopN
from src.schemas import GroupId

# Under the comments prefix (and tag), as before the split: the URLs stay the same. Included
# before the comments router, whose `/{comment_ref}` would otherwise match `/stats`.
router = APIRouter(prefix="/api/v1/comments", tags=["comments"], dependencies=[SingleQueryValues])


@router.post(
    "/cleanup/async",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAcceptedResponse,
    responses={**QUEUED, 403: {"description": "Needs the admin role"}},
    description="Queue `cleanup_old_data` (admin): comments, analyses and finished jobs past the "
    "cut-off (without older_than_days: the workers' configured retention, "
    "ARQ_CLEANUP_RETENTION_DAYS).\n\nRules the schema cannot state (a 422 names the rule "
    f"broken): {WEBHOOK_RULE}",
)
async def cleanup_async(
    arq_service: ArqServiceDep,
    principal: PrincipalDep,
    webhook: WebhookDep,
    older_than_days: Annotated[
        OlderThanDays | None,
        Query(
            description="age in days of the data removed; unset: the workers' configured "
            "retention (ARQ_CLEANUP_RETENTION_DAYS, 365 by default)"
        ),
    ] = None,
    dry_run: Annotated[bool, Query(description="count only (the default)")] = True,
) -> JobAcceptedResponse:
    """Queue `cleanup_old_data` (admin): comments, analyses and finished jobs past the cut-off."""
    params = {"older_than_days": older_than_days, "dry_run": dry_run}
    return await queue_job(arq_service, principal, webhook, "cleanup_old_data", params)


@router.get("/stats", response_model=list[CommunityStatsOut], responses=STORED)
async def community_stats(session: SessionDep, principal: PrincipalDep) -> list[CommunityStatsOut]:
    """Per-community aggregates as of the last `update_statistics` run (see `computed_at`)."""
    rows = await list_statistics(session)
    return [CommunityStatsOut.model_validate(row) for row in rows]


@router.post(
    "/pipeline/async",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PipelineResponse,
    responses=QUEUED,
    description="Queue a community's whole pipeline as one chain of jobs (all of them or none): "
    "`parse_vk_comments`, then `process_batch_comments` (morphology of the comments without a "
    "stored analysis: the new ones), then `update_community_statistics`, then `generate_report`."
    " Each job waits (`waiting`) until the one before it has completed; a failed step fails "
    "the ones after it (`DependencyFailed`). The completion webhook is the report's: it tells "
    "when the report can be downloaded (`download_url`), or that the pipeline failed.\n\n"
    f"Rules the schema cannot state (a 422 names the rule broken): {WEBHOOK_RULE}",
)
async def pipeline_async(
    arq_service: ArqServiceDep,
    principal: PrincipalDep,
    webhook: WebhookDep,
    group_id: GroupId,
    limit: PostLimit = 100,
    report_format: Annotated[FileFormat, Query(alias="format")] = ReportFormat.JSON,
    top_n: Annotated[ReportTopN, Query(description="authors, posts, keywords listed")] = 20,
) -> PipelineResponse:
    """Queue parse -> morphology of the new comments -> statistics -> report for a community."""
    steps: list[tuple[str, dict[str, Any]]] = [
        ("parse_vk_comments", {"group_id": group_id, "limit": limit}),
        (
            "process_batch_comments",
            {"group_id": group_id, "operations": ["morphology"], "only_unanalysed": True},
        ),
        ("update_community_statistics", {"group_id": group_id}),
        ("generate_report", {"group_id": group_id, "format": report_format, "top_n": top_n}),
    ]
    last = len(steps) - 1
    jobs = await arq_service.enqueue_batch(
        [
            EnqueueRequest(
                function_name=function,
                kwargs=kwargs,
                depends_on=[f"${index - 1}"] if index else None,
                # The caller is told once, when the report is ready (or the chain failed).
                notify_url=webhook.url if index == last else None,
                notify_secret=webhook.secret if index == last else None,
            )
            for index, (function, kwargs) in enumerate(steps)
        ],
        principal=principal,
    )
    report_id = jobs[last].job_id
    return PipelineResponse(
        message=f"pipeline of community {group_id} queued: {len(jobs)} jobs",
        data=PipelineData(
            group_id=group_id,
            limit=limit,
            format=report_format.value,
            top_n=top_n,
            jobs=jobs,
            report_id=report_id,
            download_url=REPORT_URL.format(report_id=report_id),
        ),
    )
