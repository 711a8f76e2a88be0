"""Request dependencies: the vault, the caller's identity, and the user scope it may touch.

Routes receive these through their signatures (`Annotated[..., Depends(...)]`). The user a
request may touch comes from the key, never from the path alone: a path naming another user
answers 404 exactly as a user that does not exist would.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from memvault.api.auth import Authenticator, Principal
from memvault.api.middleware import KEY_ID
from memvault.api.ratelimit import RateLimiter
from memvault.errors import NotFound, Unauthorized
from memvault.keys import Scope
from memvault.vault import Vault

bearer = HTTPBearer(auto_error=False, description="An API key (mvk_...) or, if enabled, a JWT.")


async def get_vault(request: Request) -> Vault:
    vault: Vault = request.app.state.vault
    return vault


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthorized("missing bearer credentials")
    auth: Authenticator = request.app.state.auth
    token = credentials.credentials
    principal = auth.quick(token)
    if principal is None:
        principal = await run_in_threadpool(auth.principal, token)
    request.scope[KEY_ID] = principal.key_id
    limiter: RateLimiter = request.app.state.rate_limiter
    limiter.check(principal.key_id)
    return principal


VaultDep = Annotated[Vault, Depends(get_vault)]
PrincipalDep = Annotated[Principal, Depends(authenticate)]


async def user_in_scope(
    user_id: Annotated[str, Path(description="The user (tenant) id.")], principal: PrincipalDep
) -> str:
    if not principal.may_access(user_id):
        raise NotFound("no such user")
    return user_id


async def admin_only(principal: PrincipalDep) -> Principal:
    principal.require(Scope.ADMIN)
    return principal


async def not_agent(principal: PrincipalDep) -> Principal:
    """Whole-user operations (profile, delete, import, export, clear, stats, consolidate) are
    not for agent keys."""
    principal.require(Scope.ADMIN, Scope.USER)
    return principal


UserId = Annotated[str, Depends(user_in_scope)]
AdminDep = Annotated[Principal, Depends(admin_only)]
OwnerDep = Annotated[Principal, Depends(not_agent)]
