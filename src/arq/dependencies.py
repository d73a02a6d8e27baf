"""FastAPI dependencies of the job module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.exceptions import RequestValidationError

from src.arq.schemas import check_webhook_url
from src.arq.service import ArqService
from src.arq.streams import StreamHub


async def get_arq_service(request: Request) -> ArqService:
    # async: a plain `def` dependency costs a thread-pool hop on every request
    service: ArqService = request.app.state.arq_service
    return service


ArqServiceDep = Annotated[ArqService, Depends(get_arq_service)]


async def get_stream_hub(request: Request) -> StreamHub:
    hub: StreamHub = request.app.state.stream_hub
    return hub


StreamHubDep = Annotated[StreamHub, Depends(get_stream_hub)]


@dataclass(frozen=True, slots=True)
class Webhook:
    """A completion webhook asked for on a domain endpoint (see `EnqueueRequest.notify_url`)."""

    url: str | None = None
    secret: str | None = None


async def get_webhook(
    x_notify_url: Annotated[
        str | None,
        Header(
            max_length=2048,
            description="completion webhook: the job's ending is POSTed here as JSON",
        ),
    ] = None,
    x_notify_secret: Annotated[
        str | None,
        Header(
            min_length=16,
            max_length=256,
            description="HMAC-SHA256 key of the completion webhook (a header: not logged)",
        ),
    ] = None,
) -> Webhook:
    """`X-Notify-Url` and `X-Notify-Secret` of the domain `/…/async` endpoints: headers, so
    that neither reaches an access log (webhook URLs often carry tokens)."""
    if x_notify_url is not None:
        try:
            x_notify_url = check_webhook_url(x_notify_url)
        except ValueError as exc:
            raise RequestValidationError(
                [{"loc": ("header", "x-notify-url"), "msg": str(exc), "type": "value_error"}]
            ) from None
    elif x_notify_secret is not None:
        raise RequestValidationError(
            [
                {
                    "loc": ("header", "x-notify-secret"),
                    "msg": "needs X-Notify-Url",
                    "type": "value_error",
                }
            ]
        )
    return Webhook(url=x_notify_url, secret=x_notify_secret)


WebhookDep = Annotated[Webhook, Depends(get_webhook)]
