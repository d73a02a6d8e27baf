"""Admin settings: webhook notifications (`NOTIFY_` prefix), database backups (`BACKUP_`)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class NotificationSettings(BaseSettings):
    """How webhooks are sent, retried and which destinations they may reach."""

    model_config = SettingsConfigDict(
        env_prefix="NOTIFY_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    timeout: float = Field(10, gt=0, le=300, description="seconds one HTTP attempt may take")
    max_attempts: int = Field(5, ge=1, le=20, description="attempts of one send, in process")
    backoff: float = Field(0.5, ge=0, le=60, description="first retry delay in s (doubles)")
    backoff_max: float = Field(30, ge=0, le=3600, description="longest retry delay in s")
    retry_after_max: float = Field(
        60, ge=0, le=3600, description="longest Retry-After (429/503) honoured in process, in s"
    )
    allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "comma-separated host names, IPs or CIDRs reachable even when private or loopback"
            " (e.g. 127.0.0.1/32 for tests)"
        ),
    )
    max_payload_bytes: int = Field(
        1_000_000, ge=1, le=100_000_000, description="largest JSON body sent"
    )
    user_agent: str = Field(
        "VK-Comments-Parser-Webhooks/0.1", min_length=1, description="User-Agent header"
    )

    @field_validator("allow_hosts", mode="before")
    @classmethod
    def _split_allow_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            stripped = value.strip()
            if stripped.startswith("["):
                return json.loads(stripped)
            return [item for item in (part.strip() for part in stripped.split(",")) if item]
        return value

    @field_validator("allow_hosts")
    @classmethod
    def _check_allow_hosts(cls, value: list[str]) -> list[str]:
        entries: list[str] = []
        for raw in value:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            if entry.startswith("[") and entry.endswith("]"):
                entry = entry[1:-1]
            try:
                entry = str(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                entry = _host_name(entry, raw)
            entries.append(entry)
        return list(dict.fromkeys(entries))


def _host_name(entry: str, raw: str) -> str:
    """`entry` as the ASCII (IDNA) host name URLs carry; `ValueError` when it is not one."""
    try:
        ascii_name = entry.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_name = ""
    labels = ascii_name.split(".")
    if not ascii_name or not all(
        label and len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
        for label in labels
    ):
        raise ValueError(f"{raw!r} is neither a host name, an IP address nor a CIDR") from None
    return ascii_name


# The longest a backup may be allowed to take (`BACKUP_TIMEOUT`); the task's own limit is above it.
BACKUP_TIMEOUT_MAX = 24 * 3600.0


class BackupSettings(BaseSettings):
    """Where `backup_database` writes, how many backups it keeps and which pg_dump it runs."""

    model_config = SettingsConfigDict(
        env_prefix="BACKUP_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    dir: Path = Field(
        Path("backups"),
        description="directory of the backup files, created (mode 0700) if missing",
    )
    keep: int = Field(
        7, ge=1, le=10_000, description="newest backups kept per database; older ones are removed"
    )
    # PostgreSQL backups need the client tools (postgresql-client), of at least the server's
    # major version: an older pg_dump refuses to dump a newer server.
    pg_dump: str = Field(
        "pg_dump", min_length=1, description="the pg_dump executable: a name on PATH or a path"
    )
    timeout: float = Field(
        3600, gt=0, le=BACKUP_TIMEOUT_MAX, description="seconds one backup may take"
    )

    @field_validator("dir", mode="before")
    @classmethod
    def _non_empty_dir(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must name a directory")
        return value

    @field_validator("pg_dump")
    @classmethod
    def _strip_pg_dump(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name the pg_dump executable")
        return value.strip()
