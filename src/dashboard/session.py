"""The dashboard's session: a signed cookie holding who signed in (never the credential).

The cookie carries, signed with `DASHBOARD_SECRET` (itsdangerous, HMAC-SHA256) and readable by
its holder: a random session id, the CSRF token of the session's forms, the owner and role, the
expiry, and for an API-key sign-in a keyed fingerprint of the key (HMAC with the secret: it
reveals nothing of the key). On each request the principal is rebuilt from it and checked again:
an API-key session ends once its key is no longer configured for that owner and role (`API_KEYS`
changed and the API restarted); a JWT session ends at the token's `exp` at the latest (a JWT has
no other revocation). Sign-out ends a session for good: its id is remembered in Redis until the
session would have expired.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from src.auth.schemas import ApiKey, Principal, Role

COOKIE_NAME = "vkp_dashboard"
COOKIE_PATH = "/dashboard"
# A signed-out session's id, kept until the session would have expired.
SIGNED_OUT_KEY = "vkp:dashboard:signed-out:{}"
# What a not-signed-in visitor's cookie lives: long enough to fill in the sign-in form.
ANONYMOUS_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class Session:
    """One browser's session; `owner` is None until it signs in."""

    sid: str
    csrf: str
    expires: int  # Unix seconds
    owner: str | None = None
    role: Role | None = None
    key: str | None = None  # the fingerprint of the API key it signed in with (None: a JWT)

    @property
    def principal(self) -> Principal | None:
        if self.owner is None or self.role is None:
            return None
        return Principal(owner=self.owner, role=self.role)

    def seconds_left(self, now: float | None = None) -> int:
        return max(0, self.expires - int(now if now is not None else time.time()))


def new_session(*, seconds: int = ANONYMOUS_SECONDS) -> Session:
    """A fresh anonymous session (new id and CSRF token)."""
    return Session(
        sid=secrets.token_urlsafe(16),
        csrf=secrets.token_urlsafe(32),
        expires=int(time.time()) + seconds,
    )


def signed_in(principal: Principal, *, seconds: int, key: str | None) -> Session:
    """A new session for `principal` (never the anonymous one's id or token: no fixation)."""
    return replace(
        new_session(seconds=seconds), owner=principal.owner, role=principal.role, key=key
    )


class SessionCodec:
    """Signs and checks session cookies, and tells which configured keys still hold."""

    def __init__(self, secret: str, *, keys: list[ApiKey]) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="vkp-dashboard-session")
        self._secret = secret.encode()
        # fingerprint -> (owner, role) of every configured key.
        self._keys = {self.fingerprint(key.key): (key.owner, key.role) for key in keys}

    def fingerprint(self, api_key: str) -> str:
        """A keyed hash of an API key: equal for the same key, useless without the secret."""
        digest = hmac.new(self._secret, b"api-key:" + api_key.encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def dumps(self, session: Session) -> str:
        body: dict[str, Any] = {"s": session.sid, "c": session.csrf, "e": session.expires}
        if session.owner is not None and session.role is not None:
            body.update(o=session.owner, r=session.role.value, k=session.key)
        return self._serializer.dumps(body)

    def loads(self, raw: str | None) -> Session | None:
        """The session in a cookie's value; None if it is forged, malformed, expired, or its
        API key no longer belongs to its owner and role."""
        if not raw:
            return None
        try:
            body = self._serializer.loads(raw)
        except BadSignature:  # SignatureExpired is one
            return None
        try:
            session = _from_body(body)
        except (KeyError, TypeError, ValueError):
            return None
        if session.seconds_left() <= 0:
            return None
        key = session.key
        if session.owner is not None and key is not None:
            # Signed in with an API key: that key must still be the owner's, in the same role.
            return session if self._keys.get(key) == (session.owner, session.role) else None
        return session


def _from_body(body: Any) -> Session:
    if not isinstance(body, dict):
        raise TypeError("not a session")
    sid, csrf, expires = body["s"], body["c"], body["e"]
    if not (isinstance(sid, str) and isinstance(csrf, str) and isinstance(expires, int)):
        raise TypeError("not a session")
    owner, role, key = body.get("o"), body.get("r"), body.get("k")
    if owner is None:
        return Session(sid=sid, csrf=csrf, expires=expires)
    if not isinstance(owner, str) or not isinstance(role, str):
        raise TypeError("not a session")
    if key is not None and not isinstance(key, str):
        raise TypeError("not a session")
    return Session(sid=sid, csrf=csrf, expires=expires, owner=owner, role=Role(role), key=key)


def tokens_match(expected: str, given: str | None) -> bool:
    """Whether a form's CSRF token is the session's (in constant time)."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
