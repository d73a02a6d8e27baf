"""Who may scrape `/metrics` (`METRICS_` prefix)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from src.config import split_list

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class MetricsSettings(BaseSettings):
    """`/metrics` answers an admin credential, or any request from these networks."""

    model_config = SettingsConfigDict(env_prefix="METRICS_", env_file=".env", extra="ignore")

    allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated IPs or CIDRs that may scrape /metrics without a credential "
        "(e.g. the Prometheus container's network); empty: admins only",
    )

    _split = field_validator("allow", mode="before")(split_list)

    @field_validator("allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is neither an IP address nor a CIDR") from None
        return value

    def networks(self) -> list[IPNetwork]:
        return [ipaddress.ip_network(entry, strict=False) for entry in self.allow]

    def allows(self, host: str | None) -> bool:
        """Whether a request from `host` may scrape without a credential."""
        if not host or not self.allow:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks())
