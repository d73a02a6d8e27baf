"""Authentication and authorisation errors."""

from __future__ import annotations

from src.exceptions import AppError


class AuthError(AppError):
    status_code = 401


class NotAuthenticated(AuthError):
    """No credential, or one that matches nothing."""

    status_code = 401

    def __init__(
        self, detail: str = "a valid X-API-Key header or Bearer token is required"
    ) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer, ApiKey header="X-API-Key"'})


class PermissionDenied(AuthError):
    """The caller is known but its role does not allow this."""

    status_code = 403
