"""VK API settings (`VK_` prefix)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class VKSettings(BaseSettings):
    """How the parser talks to the VK API and how fast it may."""

    # `hide_input_in_errors`: a validation error must never echo a value (the token is one).
    model_config = SettingsConfigDict(
        env_prefix="VK_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    token: SecretStr | None = Field(None, description="access token (service or community)")
    api_url: str = Field("https://api.vk.com/method", description="base URL of API methods")
    api_version: str = Field("5.199", description="the `v` parameter sent with every call")
    # About 3/s for user and service tokens, 20/s for community tokens; shared by every process.
    requests_per_second: float = Field(3, gt=0, le=1000, description="requests per token per s")
    timeout: float = Field(10, gt=0, le=300, description="seconds one HTTP request may take")
    max_retries: int = Field(5, ge=0, le=50, description="retries of a transient failure")
    execute_batch: int = Field(25, ge=1, le=25, description="API calls in one `execute`")
    retry_backoff: float = Field(0.5, gt=0, le=60, description="first retry delay in s (doubles)")
    retry_backoff_max: float = Field(30, gt=0, le=3600, description="longest retry delay in s")
    # Requests leave a little after their slot is granted and VK counts them on arrival, so the
    # limiter's window is a little longer than a second.
    rate_window_slack: float = Field(0.1, ge=0, le=1, description="seconds added to the window")
    # The circuit breaker, shared by every worker through Redis (`src.vk.breaker`).
    breaker_failures: int = Field(
        5,
        ge=0,
        le=1000,
        description="failed requests in a row (network errors, timeouts, 5xx, VK errors 1 and 10)"
        " that open the VK circuit; 0: no breaker",
    )
    breaker_cooldown: float = Field(
        30, gt=0, le=3600, description="seconds an open circuit refuses requests before a probe"
    )

    @field_validator("api_url")
    @classmethod
    def _check_api_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL, e.g. https://api.vk.com/method")
        if parts.query or parts.fragment or " " in value:
            raise ValueError("must not contain a query, a fragment or spaces")
        return value

    @field_validator("api_version")
    @classmethod
    def _check_api_version(cls, value: str) -> str:
        major, _, minor = value.partition(".")
        if not (major.isdigit() and minor.isdigit()):
            raise ValueError("must look like 5.199")
        return value

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        # An empty VK_TOKEN= line means "not set"; stray whitespace from copy-paste is dropped.
        secret = value.get_secret_value().strip()
        return SecretStr(secret) if secret else None
