"""`Authenticator`: API keys and HS256 JWTs turned into principals."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from src.auth.config import DEVELOPMENT_API_KEY, AuthSettings
from src.auth.exceptions import NotAuthenticated
from src.auth.schemas import Principal, Role
from src.auth.service import Authenticator

SECRET = "unit-test-jwt-secret-0123456789-abcdefghijklmnopqrstuvwxyz-0123456789"
OTHER_SECRET = "another-jwt-secret-0123456789-abcdefghijklmnopqrstuvwxyz-9876543210"
KEYS = "alice:user:alice-key-0001,bob:user:bob-key-00002,root:admin:root-key-00003"


def make_authenticator(api_keys: str = KEYS, jwt_secret: str | None = SECRET) -> Authenticator:
    return Authenticator(
        AuthSettings(_env_file=None, api_keys=api_keys, jwt_secret=jwt_secret)  # type: ignore[arg-type]
    )


def mint(
    claims: dict[str, Any] | None = None,
    *,
    secret: str = SECRET,
    algorithm: str = "HS256",
    expires_in: float | None = 300,
) -> str:
    payload: dict[str, Any] = {"sub": "alice"}
    if expires_in is not None:
        payload["exp"] = int(time.time() + expires_in)
    payload.update(claims or {})
    return jwt.encode(payload, secret, algorithm=algorithm)


def drop(claims: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in claims.items() if k != name}


@pytest.fixture
def authenticator() -> Authenticator:
    return make_authenticator()


# -- API keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "owner", "role"),
    [
        ("alice-key-0001", "alice", Role.USER),
        ("bob-key-00002", "bob", Role.USER),
        ("root-key-00003", "root", Role.ADMIN),
    ],
)
def test_from_api_key_gives_owner_and_role(
    authenticator: Authenticator, key: str, owner: str, role: Role
) -> None:
    principal = authenticator.from_api_key(key)
    assert principal == Principal(owner=owner, role=role)
    assert principal.is_admin is (role is Role.ADMIN)


@pytest.mark.parametrize(
    "key",
    [
        "wrong-key-0000",
        "alice-key-000",  # a prefix of a real key
        "alice-key-00011",  # a real key plus a character
        "ALICE-KEY-0001",  # keys are case-sensitive
        " alice-key-0001",
        "",
        "ключ-не-тот",
    ],
)
def test_from_api_key_rejects_wrong_keys(authenticator: Authenticator, key: str) -> None:
    with pytest.raises(NotAuthenticated) as info:
        authenticator.from_api_key(key)
    assert info.value.status_code == 401
    assert info.value.detail == "invalid API key"
    assert info.value.headers is not None
    assert "WWW-Authenticate" in info.value.headers


def test_from_api_key_with_no_keys_configured_rejects_everything() -> None:
    authenticator = make_authenticator(api_keys="", jwt_secret=None)
    for key in ("alice-key-0001", DEVELOPMENT_API_KEY, ""):
        with pytest.raises(NotAuthenticated):
            authenticator.from_api_key(key)


def test_owner_may_have_several_keys() -> None:
    authenticator = make_authenticator("alice:user:alice-laptop-1,alice:user:alice-server-2")
    assert authenticator.from_api_key("alice-laptop-1").owner == "alice"
    assert authenticator.from_api_key("alice-server-2").owner == "alice"


def test_uses_key(authenticator: Authenticator) -> None:
    assert authenticator.uses_key("alice-key-0001") is True
    assert authenticator.uses_key("root-key-00003") is True
    assert authenticator.uses_key("alice-key-000") is False
    assert authenticator.uses_key(DEVELOPMENT_API_KEY) is False
    assert make_authenticator(f"dev:admin:{DEVELOPMENT_API_KEY}").uses_key(DEVELOPMENT_API_KEY)
    assert make_authenticator("").uses_key(DEVELOPMENT_API_KEY) is False


# -- Bearer JWTs ----------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "expected"), [("admin", Role.ADMIN), ("user", Role.USER)])
def test_from_bearer_valid_token(authenticator: Authenticator, role: str, expected: Role) -> None:
    principal = authenticator.from_bearer(mint({"sub": "carol", "role": role}))
    assert principal == Principal(owner="carol", role=expected)
    assert principal.is_admin is (expected is Role.ADMIN)


def test_from_bearer_role_defaults_to_user(authenticator: Authenticator) -> None:
    principal = authenticator.from_bearer(mint({"sub": "dave"}))
    assert principal == Principal(owner="dave", role=Role.USER)
    assert principal.is_admin is False


def test_from_bearer_subject_need_not_be_a_configured_key_owner(
    authenticator: Authenticator,
) -> None:
    assert authenticator.from_bearer(mint({"sub": "someone-new"})).owner == "someone-new"


def test_from_bearer_expired(authenticator: Authenticator) -> None:
    with pytest.raises(NotAuthenticated) as info:
        authenticator.from_bearer(mint(expires_in=-120))
    assert info.value.detail == "token expired"
    assert info.value.status_code == 401


def test_from_bearer_wrong_secret(authenticator: Authenticator) -> None:
    with pytest.raises(NotAuthenticated) as info:
        authenticator.from_bearer(mint({"role": "admin"}, secret=OTHER_SECRET))
    assert info.value.detail.startswith("invalid token")
    assert "signature" in info.value.detail.lower()
    assert SECRET not in info.value.detail


def test_from_bearer_missing_sub(authenticator: Authenticator) -> None:
    token = jwt.encode({"exp": int(time.time()) + 300, "role": "admin"}, SECRET, algorithm="HS256")
    with pytest.raises(NotAuthenticated) as info:
        authenticator.from_bearer(token)
    assert "sub" in info.value.detail


def test_from_bearer_missing_exp(authenticator: Authenticator) -> None:
    with pytest.raises(NotAuthenticated) as info:
        authenticator.from_bearer(mint({"role": "admin"}, expires_in=None))
    assert "exp" in info.value.detail


@pytest.mark.parametrize("sub", ["", 42, None])
def test_from_bearer_sub_must_be_a_non_empty_string(
    authenticator: Authenticator, sub: object
) -> None:
    with pytest.raises(NotAuthenticated) as info:
        authenticator.from_bearer(mint({"sub": sub}))
    assert "sub" in info.value.detail.lower()


@pytest.mark.parametrize("role", ["root", "ADMIN", "", 1, ["admin"], None])
def test_from_bearer_bad_role(authenticator: Authenticator, role: object) -> None:
    with pytest.raises(NotAuthenticated) as info:
        authenticator.from_bearer(mint({"role": role}))
    assert "role" in info.value.detail


def test_from_bearer_rejects_alg_none(authenticator: Authenticator) -> None:
    payload = {"sub": "root", "role": "admin", "exp": int(time.time()) + 300}
    token = jwt.encode(payload, None, algorithm="none")
    assert jwt.get_unverified_header(token)["alg"] == "none"
    with pytest.raises(NotAuthenticated) as info:
        authenticator.from_bearer(token)
    assert info.value.detail.startswith("invalid token")


def test_from_bearer_rejects_none_alg_with_stripped_signature(
    authenticator: Authenticator,
) -> None:
    # A valid token whose header is swapped for alg=none and whose signature is dropped.
    header, payload, _ = mint({"sub": "root", "role": "admin"}).split(".")
    none_header = jwt.encode({}, None, algorithm="none").split(".")[0]
    with pytest.raises(NotAuthenticated):
        authenticator.from_bearer(f"{none_header}.{payload}.")
    assert header != none_header


def test_from_bearer_rejects_other_hmac_algorithm(authenticator: Authenticator) -> None:
    # Right secret, but not the configured algorithm: the algorithm is pinned.
    with pytest.raises(NotAuthenticated):
        authenticator.from_bearer(mint({"role": "admin"}, algorithm="HS512"))


def test_from_bearer_tampered_payload(authenticator: Authenticator) -> None:
    header, _, signature = mint({"sub": "alice", "role": "user"}).split(".")
    forged_payload = mint({"sub": "alice", "role": "admin"}, secret=OTHER_SECRET).split(".")[1]
    with pytest.raises(NotAuthenticated):
        authenticator.from_bearer(f"{header}.{forged_payload}.{signature}")


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "alice-key-0001"])
def test_from_bearer_garbage(authenticator: Authenticator, token: str) -> None:
    with pytest.raises(NotAuthenticated) as info:
        authenticator.from_bearer(token)
    assert info.value.detail.startswith("invalid token")


def test_jwt_disabled_without_secret() -> None:
    authenticator = make_authenticator(jwt_secret=None)
    with pytest.raises(NotAuthenticated) as info:
        authenticator.from_bearer(mint({"role": "admin"}))
    assert "JWT_SECRET" in info.value.detail
    # API keys still work.
    assert authenticator.from_api_key("alice-key-0001").owner == "alice"


def test_jwt_disabled_with_empty_secret() -> None:
    authenticator = make_authenticator(jwt_secret="")
    with pytest.raises(NotAuthenticated) as info:
        authenticator.from_bearer(mint())
    assert "JWT_SECRET" in info.value.detail


def test_token_signed_with_a_guessable_secret_is_rejected(authenticator: Authenticator) -> None:
    # PyJWT warns about short HMAC keys; the point here is only that the token is refused.
    with pytest.warns(jwt.InsecureKeyLengthWarning):
        token = mint({"role": "admin"}, secret="secret")
    with pytest.raises(NotAuthenticated):
        authenticator.from_bearer(token)
