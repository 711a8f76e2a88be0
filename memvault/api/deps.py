"""Request dependencies: the vault, the caller's identity, and the user scope it may touch.

Routes receive these through their signatures (`Annotated[..., Depends(...)]`). The user a
request may touch comes from the key, never from the path alone: a path naming another user
answers 404 exactly as a user that does not exist would.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from memvault.api.middleware import KEY_ID
from memvault.api.ratelimit import RateLimiter
from memvault.config import Settings
from memvault.errors import Forbidden, NotFound, Unauthorized
from memvault.keys import KEY_PREFIX, Scope, hash_secret, same_secret
from memvault.vault import Vault

ENV_ADMIN_KEY_ID = "env-admin"
KEY_CACHE_SECONDS = 5.0
KEY_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a scope, the user and agent it is bound to, and a loggable key id."""

    scope: Scope
    user_id: str | None
    agent_id: str | None
    key_id: str

    def may_access(self, user_id: str) -> bool:
        return self.scope is Scope.ADMIN or self.user_id == user_id

    def require(self, *scopes: Scope) -> None:
        if self.scope not in scopes:
            raise Forbidden(f"a {self.scope.value} key may not do this")

    def stamp_agent(self, fields: dict[str, Any]) -> dict[str, Any]:
        """An agent key writes as its own agent, and only as it."""
        if self.scope is not Scope.AGENT:
            return fields
        if fields.get("agent_id") not in (None, self.agent_id):
            raise Forbidden("an agent key writes only as its own agent")
        return {**fields, "agent_id": self.agent_id}

    def sees_agent(self, agent_id: str | None) -> bool:
        """An agent key sees only its own agent's memories; other keys see every agent's."""
        return self.scope is not Scope.AGENT or agent_id == self.agent_id


class Authenticator:
    """Turns a bearer token (an API key, the configured admin key, or a JWT) into a Principal."""

    def __init__(self, vault: Vault, settings: Settings) -> None:
        self.vault = vault
        self.admin_key = settings.admin_key
        self.jwt_secret = settings.jwt_secret
        self._cache: dict[str, tuple[Principal, float]] = {}  # key hash -> (principal, expiry)

    def principal(self, token: str) -> Principal:
        """Check a token (reads the database for API keys: call it off the event loop)."""
        if self.admin_key is not None and same_secret(token, self.admin_key):
            return Principal(Scope.ADMIN, None, None, ENV_ADMIN_KEY_ID)
        if token.startswith(KEY_PREFIX):
            key = self.vault.keys.authenticate(token)
            if key is not None:
                principal = Principal(key.scope, key.user_id, key.agent_id, key.id)
                self._remember(token, principal)
                return principal
        elif self.jwt_secret is not None:
            return self._from_jwt(token, self.jwt_secret)
        raise Unauthorized("invalid or revoked credentials")

    def cached(self, token: str) -> Principal | None:
        """The principal of an API key checked in the last few seconds, without the database.

        A key revoked through this process is forgotten at once; revoked elsewhere (the CLI,
        another server), it keeps working here for at most `KEY_CACHE_SECONDS`.
        """
        entry = self._cache.get(hash_secret(token))
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def _remember(self, token: str, principal: Principal) -> None:
        if len(self._cache) >= KEY_CACHE_SIZE:
            self._cache.clear()
        self._cache[hash_secret(token)] = (principal, time.monotonic() + KEY_CACHE_SECONDS)

    def forget(self, key_id: str) -> None:
        for digest, (principal, _) in list(self._cache.items()):
            if principal.key_id == key_id:
                self._cache.pop(digest, None)

    @staticmethod
    def _from_jwt(token: str, secret: str) -> Principal:
        """A JWT signed with the shared secret: `sub` is the user; an `agent_id` claim narrows
        it to that agent. Expiry is checked when the token carries one."""
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["sub"]})
        except jwt.InvalidTokenError:
            raise Unauthorized("invalid or revoked credentials") from None
        sub, agent = claims.get("sub"), claims.get("agent_id")
        if not isinstance(sub, str) or not (agent is None or isinstance(agent, str)):
            raise Unauthorized("invalid or revoked credentials")
        digest = hashlib.sha256(sub.encode()).hexdigest()[:16]  # user ids stay out of logs
        scope = Scope.USER if agent is None else Scope.AGENT
        return Principal(scope, sub, agent, f"jwt:{digest}")


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
    principal = auth.cached(token)
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
    """Whole-user operations (profile, delete, import, export, clear) are not for agent keys."""
    principal.require(Scope.ADMIN, Scope.USER)
    return principal


UserId = Annotated[str, Depends(user_in_scope)]
AdminDep = Annotated[Principal, Depends(admin_only)]
OwnerDep = Annotated[Principal, Depends(not_agent)]
