"""Tasks of outgoing webhooks: `send_notification`."""

from __future__ import annotations

from typing import Any, Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.exc import SQLAlchemyError

from src.arq import history_shared
from src.arq.context import JobContext, Resource, WorkerContext, provide
from src.arq.exceptions import RetryLater
from src.arq.registry import TaskRegistry
from src.config import load
from src.schemas import exactly_one
from src.webhooks import breaker, completion
from src.webhooks.breaker import HostCircuits
from src.webhooks.config import NotificationSettings
from src.webhooks.delivery import send_webhook
from src.webhooks.exceptions import WebhookFailed, WebhookHostUnavailable
from src.webhooks.templates import TEMPLATES, render_template

tasks = TaskRegistry()
# Completion webhooks (`notify_url` on any job) are sent by this package's subscriber of the job
# lifecycle events, as `send_notification` jobs under ids of their own.
tasks.on_service(completion.install)
tasks.reserve_id_prefix(completion.ID_PREFIX)
# The receivers' circuit breakers in the health details.
tasks.on_service(breaker.install)

NOTIFY_SETTINGS: Resource[NotificationSettings] = Resource("notify_settings")


# What a webhook's JSON may hold (it travels through Redis as JSON of 64-bit numbers and is
# stored in PostgreSQL's jsonb); stated in the schema, so a refusal names a documented rule.
_BIG_INTEGER = "integers must be within the signed 64-bit range"
_NUL = "must not contain the NUL character (U+0000)"
_STORABLE = f"{_BIG_INTEGER}; {_NUL}"


class NotificationArgs(BaseModel):
    """A webhook: a JSON payload (or a named template) POSTed to `url`, signed if `secret`.
    Give either payload or template."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            **exactly_one("payload", "template"),
            "examples": [{"url": "https://example.org/hooks/vk", "payload": {"text": "hello"}}],
        },
    )

    channel: Literal["webhook"] = "webhook"
    url: str = Field(
        max_length=2048,
        pattern=r"^https?://",
        description="http(s) URL; private, loopback and link-local addresses are refused",
        examples=["https://example.org/hooks/vk"],
    )
    payload: dict[str, Any] | None = Field(None, description=f"the JSON body; {_STORABLE}")
    template: str | None = Field(
        None,
        description=f"or one of: {', '.join(TEMPLATES)}",
        json_schema_extra={"enum": [*TEMPLATES, None]},
    )
    context: dict[str, Any] = Field(
        default_factory=dict, description=f"the template's values; {_STORABLE}"
    )
    secret: str | None = Field(
        None, min_length=16, max_length=256, description="HMAC-SHA256 key for X-Signature"
    )

    @field_validator("template")
    @classmethod
    def _known_template(cls, value: str | None) -> str | None:
        if value is not None and value not in TEMPLATES:
            raise ValueError(f"unknown template; known: {', '.join(TEMPLATES)}")
        return value

    @field_validator("payload", "context")
    @classmethod
    def _storable(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # The job travels through Redis as JSON of 64-bit numbers: refuse here what cannot.
        try:
            dumped = orjson.dumps(value)
        except orjson.JSONEncodeError:
            raise ValueError(_BIG_INTEGER) from None
        if b"\\u0000" in dumped:  # PostgreSQL's jsonb cannot hold NUL
            raise ValueError(_NUL)
        return value

    @model_validator(mode="after")
    def _one_body(self) -> Self:
        if (self.payload is None) == (self.template is None):
            raise ValueError("give either payload or template")
        return self


@tasks.on_worker_startup
async def load_notification_settings(ctx: WorkerContext) -> None:
    provide(ctx, NOTIFY_SETTINGS, load(NotificationSettings))


@tasks.task(args=NotificationArgs, timeout=300)
async def send_notification(ctx: JobContext, args: NotificationArgs) -> dict[str, Any]:
    """POST a JSON webhook; retried with backoff on 5xx and network errors, not on 4xx."""
    settings = NOTIFY_SETTINGS.get(ctx)
    payload = (
        args.payload
        if args.payload is not None
        else render_template(args.template or "", args.context)
    )
    circuits = None
    if settings.breaker_failures:
        circuits = HostCircuits(ctx["redis"], settings, scope=await _owner_scope(ctx))
    try:
        report = await send_webhook(
            args.url, payload, secret=args.secret, settings=settings, circuits=circuits
        )
    except WebhookHostUnavailable as exc:
        # The host's circuit is open: wait it out without spending a try.
        raise RetryLater(exc.detail, defer=exc.retry_after, keep_try=True) from exc
    except WebhookFailed as exc:
        raise RetryLater(exc.detail, defer=exc.retry_after) from exc
    return {
        "status_code": report.status_code,
        "attempts": report.attempts,
        "duration_ms": report.duration_ms,
        "response": report.response_excerpt,
    }


async def _owner_scope(ctx: JobContext) -> str:
    """Whose circuits this job's sends use: its owner's (one user's failing host must not hold
    up another's webhooks); the job's own if the history cannot say."""
    try:
        async with ctx["sessionmaker"]() as session:
            found = await history_shared.owner_and_status(
                session, ctx["job_id"], function="send_notification"
            )
    except (SQLAlchemyError, OSError):
        found = None
    return f"owner:{found.owner}" if found is not None else f"job:{ctx['job_id']}"
