"""Credentials: API keys and the JWT secret (no env prefix: `API_KEYS`, `JWT_SECRET`)."""

from __future__ import annotations

import hmac

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from src.auth.schemas import OWNER_MAX_LENGTH, ApiKey, Role, is_reserved_owner
from src.config import ConfigError, Environment

# The key `.env.example` ships so the README's curl examples work; the app warns when it is
# used, and refuses to start with it in production.
DEVELOPMENT_API_KEY = "dev-key-change-me"
# The longest `JWT_MAX_TTL` accepted: a token that lives longer is no longer a session.
JWT_MAX_TTL_LIMIT = 366 * 24 * 3600


class AuthSettings(BaseSettings):
    """`API_KEYS`: comma-separated `owner:role:key` entries; `JWT_SECRET` enables Bearer JWTs."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True)

    api_keys: SecretStr = SecretStr("")
    jwt_secret: SecretStr | None = None
    jwt_max_ttl: int = Field(
        86400,
        gt=0,
        le=JWT_MAX_TTL_LIMIT,
        description="seconds a JWT may live: `exp` at most this long after `iat` (or after now)",
    )

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

    def check_environment(self, environment: Environment) -> None:
        """Raise `ConfigError` (naming `API_KEYS`) if the development key is on in production."""
        if environment is not Environment.PRODUCTION:
            return
        dev_key = DEVELOPMENT_API_KEY.encode()
        positions = [
            position
            for position, key in _entries(self.api_keys.get_secret_value())
            if hmac.compare_digest(key.key.encode(), dev_key)
        ]
        if positions:
            raise ConfigError(
                f"invalid configuration: API_KEYS: entry {positions[0]} is the development key "
                f"{DEVELOPMENT_API_KEY!r} from .env.example, which is refused when "
                "ENVIRONMENT=production; set keys of your own"
            )


def parse_api_keys(raw: str) -> list[ApiKey]:
    """Parse `owner:role:key,...`; an error names the entries' positions, never a key.

    Refused: a malformed entry, an unknown role, a short key, an owner that is reserved or
    longer than the job history stores, and a key listed twice (it would silently belong to
    whichever entry came last).
    """
    keys: list[ApiKey] = []
    seen: dict[str, int] = {}
    for position, key in _entries(raw):
        first = seen.setdefault(key.key, position)
        if first != position:
            raise ValueError(
                f"entries {first} and {position} have the same key; each key must be listed once"
            )
        keys.append(key)
    return keys


def _entries(raw: str) -> list[tuple[int, ApiKey]]:
    """Each non-empty entry of `raw` with its 1-based position, checked one by one."""
    entries: list[tuple[int, ApiKey]] = []
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
        if is_reserved_owner(owner):
            raise ValueError(f"entry {position} has the reserved owner {owner!r}; choose another")
        if len(owner) > OWNER_MAX_LENGTH:
            raise ValueError(
                f"entry {position} has an owner longer than {OWNER_MAX_LENGTH} characters"
            )
        entries.append((position, ApiKey(owner=owner, role=Role(role), key=key)))
    return entries
