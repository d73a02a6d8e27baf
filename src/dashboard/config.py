"""The dashboard's settings (`DASHBOARD_` prefix): the session cookie's secret, life and flags."""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from src.config import Environment

SECRET_MIN_LENGTH = 32


class DashboardSettings(BaseSettings):
    """`/dashboard`: on unless `DASHBOARD_ENABLED=false`; sessions are signed with
    `DASHBOARD_SECRET`, which production needs (without it the dashboard stays off there)."""

    model_config = SettingsConfigDict(
        env_prefix="DASHBOARD_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    enabled: bool = Field(True, description="serve the web dashboard at /dashboard")
    secret: SecretStr | None = Field(
        None,
        description=f"{SECRET_MIN_LENGTH}+ characters that sign the session cookies; unset: a "
        "random one per process outside production (sessions end with the process), and no "
        "dashboard in production",
    )
    session_seconds: int = Field(
        3600, ge=60, le=86_400, description="how long a sign-in lasts (a JWT's: at most its exp)"
    )
    cookie_secure: Literal["auto", "always", "never"] = Field(
        "auto",
        description="the cookie's Secure flag: auto sets it when the request came over HTTPS "
        "(as uvicorn sees it: X-Forwarded-Proto from FORWARDED_ALLOW_IPS only)",
    )
    page_size: int = Field(50, ge=5, le=500, description="rows per page of the job tables")

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < SECRET_MIN_LENGTH:
            raise ValueError(
                f"must be at least {SECRET_MIN_LENGTH} characters (e.g. `openssl rand -hex 32`)"
            )
        return value

    def serves(self, environment: Environment) -> bool:
        """Whether the dashboard is served: enabled, and in production only with a secret."""
        return self.enabled and (
            self.secret is not None or environment is not Environment.PRODUCTION
        )

    def signing_secret(self) -> str:
        """The secret that signs sessions: the configured one, else a random one (then
        sessions end with the process and are not shared between API processes)."""
        if self.secret is not None:
            return self.secret.get_secret_value()
        return secrets.token_urlsafe(32)
