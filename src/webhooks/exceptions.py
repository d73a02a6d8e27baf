"""Errors of outgoing webhooks.

None of them ever carries a webhook secret, and webhook URLs appear only as
`scheme://host[:port]` (their paths and queries often hold tokens).
"""

from __future__ import annotations

from src.exceptions import AppError


class WebhookError(AppError):
    status_code = 400


class InvalidWebhookUrl(WebhookError):
    """The URL is not an http(s) URL with a host, or carries credentials."""

    status_code = 422


class AddressRefused(InvalidWebhookUrl):
    """The host is, or resolves to, an address webhooks may not reach (private, loopback, ...).

    For a host name the message says only that its address is not public: never the address it
    resolved to nor its kind, which would map the internal network for whoever submits URLs.
    `reason` (what kind of address) is given only for an IP literal, the caller's own input.
    """

    def __init__(self, host: str, reason: str | None = None) -> None:
        super().__init__(
            f"refused: {host} is {reason}; webhooks go to public addresses only"
            if reason
            else f"refused: the address of {host!r} is not public",
            host=host,
        )
        self.host = host
        self.reason = reason


class HostUnresolvable(InvalidWebhookUrl):
    """The webhook's host name does not resolve (now)."""

    def __init__(self, host: str) -> None:
        super().__init__(f"cannot resolve host {host!r}", host=host)
        self.host = host


class InvalidWebhookPayload(WebhookError):
    """The payload cannot be encoded as JSON."""

    status_code = 422


class WebhookPayloadTooLarge(WebhookError):
    status_code = 422

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"webhook payload is {size} bytes; at most {limit} are sent",
            size=size,
            limit=limit,
        )


class WebhookRejected(WebhookError):
    """The receiver answered a 4xx (or a redirect, never followed): retrying will not help."""

    status_code = 502
    retryable = False

    def __init__(self, detail: str, *, receiver_status: int, attempts: int) -> None:
        super().__init__(detail, receiver_status=receiver_status, attempts=attempts)
        self.receiver_status = receiver_status
        self.attempts = attempts


class WebhookFailed(WebhookError):
    """Every attempt failed transiently (5xx, 429, network error, timeout).

    A job may try again later: `raise RetryLater(str(exc), defer=exc.retry_after)`.
    """

    status_code = 502
    retryable = True

    def __init__(
        self,
        detail: str,
        *,
        attempts: int,
        receiver_status: int | None = None,
        error: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            detail, attempts=attempts, receiver_status=receiver_status, last_error=error
        )
        self.attempts = attempts
        self.receiver_status = receiver_status
        self.error = error
        self.retry_after = retry_after


class WebhookHostUnavailable(WebhookError):
    """The circuit of the receiver's host (for this owner) is open: it kept failing, so nothing
    is sent to it until the cool-down ends (or while a probe is under way). A job waits
    `retry_after` s without spending a try: `raise RetryLater(..., keep_try=True)`."""

    status_code = 503
    retryable = True

    def __init__(self, reason: str, *, retry_after: float) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class UnknownTemplate(WebhookError):
    status_code = 422

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown notification template {name!r}; known templates: {', '.join(known)}",
            errors=[{"loc": ["template"], "msg": f"unknown template {name!r}", "type": "unknown"}],
            known_templates=known,
        )


class InvalidTemplateContext(WebhookError):
    """A template's context lacks a value it needs."""

    status_code = 422
