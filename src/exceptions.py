"""The one error base; `src.main` maps every subclass to the same JSON shape."""

from __future__ import annotations

from typing import Any


def error_body(error: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The one JSON shape of every error."""
    return {"error": error, "detail": detail, **extra}


class AppError(Exception):
    """Base of every error the API reports on purpose."""

    status_code: int = 500

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        self.extra = extra


class ServiceUnavailable(AppError):
    """A backing service (Redis, the database) cannot be reached."""

    status_code = 503
