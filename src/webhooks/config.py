"""Webhook settings (`NOTIFY_` prefix)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from src.config import split_list


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
    # Circuit breakers per owner and receiver host, shared by every worker (`src.webhooks.breaker`).
    breaker_failures: int = Field(
        5,
        ge=0,
        le=1000,
        description="failed attempts in a row (network errors, timeouts, 5xx) that open the"
        " circuit of an owner's receiver host; 0: no breaker",
    )
    breaker_cooldown: float = Field(
        60, gt=0, le=3600, description="seconds an open circuit refuses sends before a probe"
    )

    _split_allow_hosts = field_validator("allow_hosts", mode="before")(split_list)

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
