"""App-wide settings (`Settings`) and the loader every concern's settings go through."""

from __future__ import annotations

import json
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./var/app.db"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class ConfigError(RuntimeError):
    """A setting is missing or invalid; the message names the environment variable."""


class Settings(BaseSettings):
    """Where the app finds Redis and its database, and how it logs."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    app_name: str = "VK Comments Parser"
    environment: Environment = Environment.DEVELOPMENT
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = DEFAULT_SQLITE_URL
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # `json`: one JSON object per line, with the request and job ids (see `src.logs`).
    log_format: Literal["text", "json"] = "text"
    # Connection and command timeouts, so a dead Redis or database gives a 503, never a hang.
    redis_timeout: float = 3.0
    database_timeout: float = 5.0
    # Database connections one process keeps open, and how many more it may open under load
    # (those are closed again when returned: a new connection costs a few round trips).
    database_pool_size: int = Field(20, ge=1, le=1000)
    database_max_overflow: int = Field(10, ge=0, le=1000)
    # Read and counted before the app parses anything: a larger body is a 413, however it is sent.
    api_max_body_bytes: int = Field(
        1_048_576, ge=1024, le=1 << 30, description="largest request body the API reads, in bytes"
    )
    # Connections one process opens to Redis at most; past it a request gets a 503. Live status
    # streams share one of them (see ARQ_STREAMS_PER_PROCESS), so this bounds short requests.
    redis_max_connections: int = Field(200, ge=2, le=100_000)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        # Accept the plain driver-less spellings people copy from elsewhere.
        for plain, async_driver in (
            ("postgres://", "postgresql+asyncpg://"),
            ("postgresql://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if value.startswith(plain):
                value = async_driver + value[len(plain) :]
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError(
                "must be a PostgreSQL (postgresql+asyncpg://) or SQLite (sqlite+aiosqlite://) URL"
            )
        return value


def configure_logging(level: str, log_format: Literal["text", "json"] = "text") -> None:
    """Send the app's log records (`src.*`) and ARQ's to stderr at `level`, as text or JSON
    lines carrying the request and job ids (`src.logs`)."""
    from src.logs import configure

    configure(level, log_format)


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load(settings_cls: type[SettingsT]) -> SettingsT:
    """Build settings from the environment and `.env`, naming the variable on failure."""
    try:
        return settings_cls()
    except ValidationError as exc:
        prefix = str(settings_cls.model_config.get("env_prefix", ""))
        problems = "; ".join(
            f"{(prefix + str(err['loc'][0])).upper() if err['loc'] else prefix}: {err['msg']}"
            for err in exc.errors()
        )
    # Raised outside the `except`: the validation error (which holds the raw values, secrets
    # included) must not travel along as this error's context.
    raise ConfigError(f"invalid configuration: {problems}")


@lru_cache
def get_settings() -> Settings:
    """The process-wide app settings."""
    return load(Settings)


def split_list(value: Any) -> Any:
    """A list setting from the environment: a JSON list or a comma-separated string (empty
    items dropped); anything else as it is (a field validator's `mode="before"` helper)."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            return json.loads(stripped)
        return [item for item in (part.strip() for part in stripped.split(",")) if item]
    return value
