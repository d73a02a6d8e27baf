"""Errors of the admin domain (webhook notifications, database backups).

None of them ever carries a webhook secret, and webhook URLs appear only as
`scheme://host[:port]` (their paths and queries often hold tokens). Backup errors never carry
the database URL or its password (pg_dump's messages are scrubbed before they get here).
"""

from __future__ import annotations

from src.exceptions import AppError


class AdminError(AppError):
    status_code = 400


class InvalidWebhookUrl(AdminError):
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


class InvalidWebhookPayload(AdminError):
    """The payload cannot be encoded as JSON."""

    status_code = 422


class WebhookPayloadTooLarge(AdminError):
    status_code = 422

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"webhook payload is {size} bytes; at most {limit} are sent",
            size=size,
            limit=limit,
        )


class WebhookRejected(AdminError):
    """The receiver answered a 4xx (or a redirect, never followed): retrying will not help."""

    status_code = 502
    retryable = False

    def __init__(self, detail: str, *, receiver_status: int, attempts: int) -> None:
        super().__init__(detail, receiver_status=receiver_status, attempts=attempts)
        self.receiver_status = receiver_status
        self.attempts = attempts


class WebhookFailed(AdminError):
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


class UnknownTemplate(AdminError):
    status_code = 422

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown notification template {name!r}; known templates: {', '.join(known)}",
            errors=[{"loc": ["template"], "msg": f"unknown template {name!r}", "type": "unknown"}],
            known_templates=known,
        )


class InvalidTemplateContext(AdminError):
    """A template's context lacks a value it needs."""

    status_code = 422


class BackupError(AdminError):
    """A database backup could not be made; no backup file was left behind."""

    status_code = 500


class BackupUnsupported(BackupError):
    """The database cannot be backed up this way (an in-memory SQLite database, say)."""

    status_code = 422


class BackupToolMissing(BackupError):
    """pg_dump is not installed where `BACKUP_PG_DUMP` says."""

    status_code = 503


class BackupFailed(BackupError):
    """The dump or copy failed; `stderr` is pg_dump's message, scrubbed and shortened."""

    status_code = 502

    def __init__(self, detail: str, *, exit_code: int | None = None, stderr: str = "") -> None:
        super().__init__(detail, exit_code=exit_code, stderr=stderr)
        self.exit_code = exit_code
        self.stderr = stderr


class BackupTimedOut(BackupError):
    """The backup took longer than `BACKUP_TIMEOUT`; pg_dump was killed."""

    status_code = 504

    def __init__(self, detail: str, *, timeout: float) -> None:
        super().__init__(detail, timeout=timeout)
        self.timeout = timeout


class ReportNotFound(AdminError):
    """No such report, or it is someone else's (the two are not told apart)."""

    status_code = 404

    def __init__(self, report_id: str, *, why: str = "") -> None:
        super().__init__(f"report {report_id!r} not found{why}")


class ReportNotReady(AdminError):
    """The caller's report job has not finished yet."""

    status_code = 409

    def __init__(self, report_id: str, *, status: str, status_url: str) -> None:
        super().__init__(
            f"report {report_id!r} is not ready: its job is {status}",
            status=status,
            status_url=status_url,
        )
