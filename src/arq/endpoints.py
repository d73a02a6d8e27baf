"""What every domain's `/…/async` endpoint shares: queueing one job, the documented statuses."""

from __future__ import annotations

from typing import Any

from src.arq.dependencies import Webhook
from src.arq.schemas import EnqueueRequest, JobAcceptedData, JobAcceptedResponse
from src.arq.service import ArqService
from src.auth.schemas import Principal

# Every operation reads the database or Redis; the error statuses carry the `Error` shape.
STORED: dict[int | str, dict[str, Any]] = {
    503: {"description": "Redis or the database is unreachable; see Retry-After"},
}
QUEUED: dict[int | str, dict[str, Any]] = {
    **STORED,
    429: {"description": "Your enqueue rate limit was reached; see Retry-After"},
}
WEBHOOK_RULE = "`X-Notify-Secret` needs X-Notify-Url."


async def queue_job(
    arq_service: ArqService,
    principal: Principal,
    webhook: Webhook,
    function: str,
    params: dict[str, Any],
) -> JobAcceptedResponse:
    """Queue `function` with the given (non-None) `params` for `principal`, with the request's
    completion webhook."""
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
