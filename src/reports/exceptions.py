"""Errors of comment reports."""

from __future__ import annotations

from src.exceptions import AppError


class ReportError(AppError):
    status_code = 400


class ReportNotFound(ReportError):
    """No such report, or it is someone else's (the two are not told apart)."""

    status_code = 404

    def __init__(self, report_id: str, *, why: str = "") -> None:
        super().__init__(f"report {report_id!r} not found{why}")


class ReportNotReady(ReportError):
    """The caller's report job has not finished yet."""

    status_code = 409

    def __init__(self, report_id: str, *, status: str, status_url: str) -> None:
        super().__init__(
            f"report {report_id!r} is not ready: its job is {status}",
            status=status,
            status_url=status_url,
        )
