"""FastAPI dependencies that authenticate the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from src.auth.exceptions import NotAuthenticated, PermissionDenied
from src.auth.schemas import Principal
from src.auth.service import Authenticator

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="owner's API key")
bearer_scheme = HTTPBearer(auto_error=False, description="HS256 JWT with `sub` and `role`")


async def get_authenticator(request: Request) -> Authenticator:
    # async: a plain `def` dependency costs a thread-pool hop on every request
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator


async def get_principal(
    request: Request,
    authenticator: Annotated[Authenticator, Depends(get_authenticator)],
    api_key: Annotated[str | None, Security(api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
) -> Principal:
    """The authenticated caller, from `X-API-Key` or `Authorization: Bearer`."""
    # Found by the request guard (`src.http_limits`) before the body was read: not twice.
    known = getattr(request.state, "principal", None)
    if isinstance(known, Principal):
        return known
    if api_key:
        return authenticator.from_api_key(api_key)
    if bearer is not None and bearer.credentials:
        return authenticator.from_bearer(bearer.credentials)
    raise NotAuthenticated()


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def require_admin(principal: PrincipalDep) -> Principal:
    """The caller, if it has the admin role."""
    if not principal.is_admin:
        raise PermissionDenied("this needs the admin role")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
