"""Credentials: API keys and the JWT secret (no env prefix: `API_KEYS`, `JWT_SECRET`)."""

from __future__ import annotations

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from src.auth.schemas import ApiKey, Role

# The key `.env.example` ships so the README's curl examples work; the app warns when it is used.
DEVELOPMENT_API_KEY = "dev-key-change-me"


class AuthSettings(BaseSettings):
    """`API_KEYS`: comma-separated `owner:role:key` entries; `JWT_SECRET` enables Bearer JWTs."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    api_keys: SecretStr = SecretStr("")
    jwt_secret: SecretStr | None = None

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: SecretStr) -> SecretStr:
        parse_api_keys(value.get_secret_value())
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _check_jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (HS256 needs a long secret)")
        return value

    def keys(self) -> list[ApiKey]:
        """The configured API keys."""
        return parse_api_keys(self.api_keys.get_secret_value())


def parse_api_keys(raw: str) -> list[ApiKey]:
    """Parse `owner:role:key,...`; the error names the entry's position, never the key."""
    keys: list[ApiKey] = []
    for position, raw_entry in enumerate(raw.split(","), 1):
        entry = raw_entry.strip()
        if not entry:
            continue
        parts = entry.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"entry {position} is not of the form owner:role:key")
        owner, role, key = parts
        if role not in Role.__members__.values():
            raise ValueError(f"entry {position} has role {role!r}; use 'user' or 'admin'")
        if len(key) < 8:
            raise ValueError(f"entry {position} has a key shorter than 8 characters")
        keys.append(ApiKey(owner=owner, role=Role(role), key=key))
    return keys
