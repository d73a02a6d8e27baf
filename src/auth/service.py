"""Turn a credential into a `Principal`: API keys (constant time) and HS256 JWTs."""

from __future__ import annotations

import hmac
import time

import jwt

from src.auth.config import AuthSettings
from src.auth.exceptions import NotAuthenticated
from src.auth.schemas import OWNER_MAX_LENGTH, ApiKey, Principal, Role, is_reserved_owner

JWT_ALGORITHM = "HS256"


class Authenticator:
    """Checks credentials against the configured keys and JWT secret."""

    def __init__(self, settings: AuthSettings) -> None:
        self._keys: list[ApiKey] = settings.keys()
        self._jwt_secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self._jwt_max_ttl = settings.jwt_max_ttl

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
        """The principal named by a JWT's `sub` and `role` claims.

        Refused besides a bad signature or an expired token: a lifetime (`exp` after `iat`, or
        after now without `iat`) over `JWT_MAX_TTL`, a reserved subject (the job module's own
        "system") and a subject longer than the job history stores.
        """
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
        self._check_lifetime(claims)
        subject = claims.get("sub")
        role = claims.get("role", Role.USER.value)
        if not isinstance(subject, str) or not subject:
            raise NotAuthenticated("invalid token: claim 'sub' must be a non-empty string")
        if len(subject) > OWNER_MAX_LENGTH:
            raise NotAuthenticated("invalid token: sub too long")
        if is_reserved_owner(subject):
            raise NotAuthenticated(f"invalid token: sub {subject!r} is reserved")
        if role not in Role.__members__.values():
            raise NotAuthenticated("invalid token: claim 'role' must be 'user' or 'admin'")
        return Principal(owner=subject, role=Role(role))

    def _check_lifetime(self, claims: dict[str, object]) -> None:
        # PyJWT has checked `exp` and `iat` loosely (it accepts "123" as well as 123) and that
        # `iat` is not in the future, so a token cannot move its start forward to live longer.
        expires = claims["exp"]
        issued = claims.get("iat")
        if not _is_number(expires):
            raise NotAuthenticated("invalid token: claim 'exp' must be a number")
        if issued is not None and not _is_number(issued):
            raise NotAuthenticated("invalid token: claim 'iat' must be a number")
        start = time.time() if issued is None else issued
        assert isinstance(expires, int | float) and isinstance(start, int | float)
        if expires - start > self._jwt_max_ttl:
            since = "now" if issued is None else "its 'iat'"
            raise NotAuthenticated(
                f"invalid token: 'exp' is more than JWT_MAX_TTL ({self._jwt_max_ttl} s) after "
                f"{since}; issue tokens that live at most that long"
            )

    def uses_key(self, key: str) -> bool:
        """Whether `key` is one of the configured keys (used to warn about the dev key)."""
        return any(hmac.compare_digest(k.key.encode(), key.encode()) for k in self._keys)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
