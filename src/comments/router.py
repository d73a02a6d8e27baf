"""REST API of the comments pipeline: `/api/v1/comments/*`.

Comments are public VK data: any authenticated caller may read them. The parse jobs follow the
job API's rules (they belong to whoever started them). Every integer parameter is bounded and
every id fits in BIGINT, so a bad value is a 422 here, not an error in the database or the queue.
"""

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, status

from src.arq.dependencies import ArqServiceDep, WebhookDep
from src.arq.endpoints import QUEUED, STORED, WEBHOOK_RULE, queue_job
from src.arq.schemas import EnqueueRequest, JobAcceptedResponse
from src.auth.dependencies import PrincipalDep
from src.comments import service
from src.comments.analysis import get_analysis, parse_ref, text_hash
from src.comments.dependencies import SessionDep
from src.comments.exceptions import AnalysisNotFound, CommentNotFound, UnresolvedCommentIds
from src.comments.references import resolve_comment_refs
from src.comments.schemas import (
    COMMENT_REF_PATTERN,
    COMMENT_REFS_PATTERN,
    AnalysisOut,
    CommentOut,
    CommentPage,
    ParseJobData,
    ParseJobResponse,
)
from src.comments.tasks import SCREEN_NAME, PostLimit, TopN
from src.openapi import SingleQueryValues
from src.schemas import Offset, OptionalGroupId, Since, Until, VkId

router = APIRouter(prefix="/api/v1/comments", tags=["comments"], dependencies=[SingleQueryValues])

_COMMENT_IDS = Query(
    max_length=30_000,
    pattern=COMMENT_REFS_PATTERN,
    description="1 to 1000 comma-separated `{owner_id}_{comment_id}` references, e.g. "
    "`-1_25,-1_26`",
)
OptionalPostId = Annotated[VkId | None, Query(description="a post on the community's wall")]
OptionalCommentIds = Annotated[str | None, _COMMENT_IDS]
# `{owner_id}_{comment_id}`, or a plain comment id: the one stored comment that has it.
_REF_OR_ID = r"(-?[0-9]{1,18}_)?[0-9]{1,18}"
REFS_OR_IDS_PATTERN = rf"^ *{_REF_OR_ID} *(, *{_REF_OR_ID} *){{0,999}}$"
CommentRefsOrIds = Annotated[
    str,
    Query(
        max_length=30_000,
        pattern=REFS_OR_IDS_PATTERN,
        description="1 to 1000 comma-separated `{owner_id}_{comment_id}` references, e.g. "
        "`-1_25,-1_26`, or plain comment ids, e.g. `25,26`: each must be the id of one stored "
        "comment (of the community `group_id`, if given)",
    ),
]
# The rules a plain id may break, as a 422's `errors[].msg` says them (and the docs, verbatim).
UNKNOWN_ID_RULE = "a plain comment id must be the id of a stored comment"
AMBIGUOUS_ID_RULE = (
    "a plain comment id must be the id of one stored comment only: name it as "
    "{owner_id}_{comment_id}, or give group_id"
)


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
    limit: PostLimit = 100,
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
    "comments.\n\nRules the schema cannot state (a 422 names the rule broken): "
    f"{UNKNOWN_ID_RULE} (of the community group_id, if given); {AMBIGUOUS_ID_RULE} (the "
    "422's `detail` and each error's `matches` list the forms that would do). "
    f"{WEBHOOK_RULE}",
)
async def analyze_async(
    arq_service: ArqServiceDep,
    session: SessionDep,
    principal: PrincipalDep,
    webhook: WebhookDep,
    comment_ids: CommentRefsOrIds,
    analysis_type: Annotated[
        Literal["morphology", "keywords"], Query(description="what to compute")
    ] = "morphology",
    group_id: Annotated[
        VkId | None, Query(description="the community whose comments plain ids name")
    ] = None,
) -> JobAcceptedResponse:
    """Queue `analyze_text_morphology` (stored per comment) or `extract_keywords` for comments."""
    function = "analyze_text_morphology" if analysis_type == "morphology" else "extract_keywords"
    resolved = await resolve_comment_refs(
        session, _refs(comment_ids) or [], owner_id=-group_id if group_id is not None else None
    )
    if resolved.unresolved:
        raise UnresolvedCommentIds(
            "; ".join(problem.explain() for problem in resolved.unresolved),
            errors=[
                {
                    "loc": ["query", "comment_ids"],
                    "msg": AMBIGUOUS_ID_RULE if problem.total else UNKNOWN_ID_RULE,
                    "type": "ambiguous_comment_id" if problem.total else "unknown_comment_id",
                    "input": str(problem.comment_id),
                    "matches": problem.matches,
                }
                for problem in resolved.unresolved
            ],
        )
    params = {"comment_ids": resolved.refs}
    return await queue_job(arq_service, principal, webhook, function, params)


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
    top_n: TopN = 20,
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
    return await queue_job(arq_service, principal, webhook, "extract_keywords", params)


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
