"""`GET /metrics`: the API process' Prometheus metrics and the queue's gauges, read at scrape.

Answers an admin credential (`X-API-Key` or a bearer JWT), or a request from a network in
`METRICS_ALLOW` (Prometheus on the cluster's network) without one. Each API process counts its
own requests and enqueues; the queue gauges are the same from every process (read from Redis and
the job history when scraped).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from src.arq.dependencies import ArqServiceDep
from src.arq.service import QueueGauges
from src.auth.dependencies import (
    api_key_header,
    bearer_scheme,
    get_authenticator,
    get_principal,
)
from src.auth.exceptions import PermissionDenied
from src.auth.service import Authenticator
from src.monitoring.config import MetricsSettings

logger = logging.getLogger(__name__)


class QueueCollector(Collector):
    """The queue's gauges as read for the scrape in progress; none when they could not be read
    (Redis or the database away), rather than stale numbers."""

    def __init__(self) -> None:
        self.latest: QueueGauges | None = None

    def collect(self) -> Iterator[Metric]:
        gauges = self.latest
        if gauges is None:
            return
        waiting = GaugeMetricFamily(
            "vkp_queue_jobs",
            "Jobs waiting on record: ready to run, deferred (a later run time, a retry delay), "
            "or blocked (waiting for their dependencies)",
            labels=["state", "priority"],
        )
        for (state, priority), count in sorted(gauges.waiting.items()):
            waiting.add_metric([state, priority], count)
        yield waiting
        yield GaugeMetricFamily(
            "vkp_queue_in_progress_jobs", "Jobs workers hold right now", gauges.in_progress
        )
        yield GaugeMetricFamily(
            "vkp_workers", "Workers with a heartbeat in the last 15 s", gauges.workers
        )
        yield GaugeMetricFamily(
            "vkp_queue_oldest_ready_age_seconds",
            "How long the longest-waiting ready job has waited since it was due (0: none)",
            gauges.oldest_ready_age_seconds,
        )
        yield GaugeMetricFamily(
            "vkp_dead_letter_jobs", "Failed jobs on record (the dead letters)", gauges.dead_letters
        )


QUEUE = QueueCollector()
REGISTRY.register(QUEUE)
READ_ERRORS = (RedisError, SQLAlchemyError, OSError, TimeoutError)

router = APIRouter(tags=["monitoring"])


async def allowed_scraper(
    request: Request,
    authenticator: Annotated[Authenticator, Depends(get_authenticator)],
    api_key: Annotated[str | None, Security(api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
) -> None:
    """From an allow-listed network, or with an admin credential (401 without one, 403 for a
    user's)."""
    settings: MetricsSettings = request.app.state.metrics_settings
    if settings.allows(request.client.host if request.client else None):
        return
    principal = await get_principal(request, authenticator, api_key, bearer)
    if not principal.is_admin:
        raise PermissionDenied("/metrics needs the admin role or an allow-listed network")


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(allowed_scraper)],
    responses={
        200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST: {}}},
        401: {"description": "No credential (and not from a METRICS_ALLOW network)"},
        403: {"description": "A user's credential: /metrics needs the admin role"},
    },
)
async def metrics(arq_service: ArqServiceDep) -> Response:
    """This API process' metrics and the queue's gauges, in Prometheus text format."""
    try:
        QUEUE.latest = await arq_service.queue_gauges()
    except READ_ERRORS as exc:
        # The process' own metrics matter most when Redis or the database is away.
        logger.warning("queue gauges left out of a scrape: %s", type(exc).__name__)
        QUEUE.latest = None
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
