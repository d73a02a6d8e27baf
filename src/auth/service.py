"""Turn a credential into a `Principal`: API keys (constant time) and HS256 JWTs."""

from __future__ import annotations

import hmac

import jwt

from src.auth.config import AuthSettings
from src.auth.exceptions import NotAuthenticated
from src.auth.schemas import ApiKey, Principal, Role

JWT_ALGORITHM = "HS256"


class Authenticator:
    """Checks credentials against the configured keys and JWT secret."""

    def __init__(self, settings: AuthSettings) -> None:
        self._keys: list[ApiKey] = settings.keys()
        self._jwt_secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None

    def from_api_key(self, presented: str) -> Principal:
        """The principal owning `presented`; every key is compared, in constant time."""
        match: ApiKey | None = None
        presented_bytes = presented.encode()
        for candidate in self._keys:
            # No early exit: the time taken does not depend on which key matched.
            if hmac.compare_digest(candidate.key.encode(), presented_bytes):
                match = candidate
        if match is None:
            raise NotAuthenticated("invalid API key")
        return Principal(owner=match.owner, role=match.role)

    def from_bearer(self, token: str) -> Principal:
        """The principal named by a JWT's `sub` and `role` claims."""
        if self._jwt_secret is None:
            raise NotAuthenticated("Bearer tokens are not enabled (JWT_SECRET is not set)")
        try:
            claims = jwt.decode(
                token,
                self._jwt_secret,
                algorithms=[JWT_ALGORITHM],
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise NotAuthenticated("token expired") from None
        except jwt.PyJWTError as exc:
            raise NotAuthenticated(f"invalid token: {exc}") from None
        subject = claims.get("sub")
        role = claims.get("role", Role.USER.value)
        if not isinstance(subject, str) or not subject:
            raise NotAuthenticated("invalid token: claim 'sub' must be a non-empty string")
        if role not in Role.__members__.values():
            raise NotAuthenticated("invalid token: claim 'role' must be 'user' or 'admin'")
        return Principal(owner=subject, role=Role(role))

    def uses_key(self, key: str) -> bool:
        """Whether `key` is one of the configured keys (used to warn about the dev key)."""
        return any(hmac.compare_digest(k.key.encode(), key.encode()) for k in self._keys)
