"""Who is calling: a bearer token (an API key, the configured admin key, or a JWT) becomes a
`Principal` with a scope, the user and agent it is bound to, and a key id safe to log."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import jwt

from memvault.config import Settings
from memvault.errors import Forbidden, Unauthorized
from memvault.events import Event
from memvault.keys import KEY_PREFIX, KEY_REVOKED, Scope, hash_secret, same_secret
from memvault.vault import Vault

ENV_ADMIN_KEY_ID = "env-admin"
JWT_KEY_ID_PREFIX = "jwt:"
USER_DELETED = "user.deleted"  # deleting a user deletes their keys
KEY_CACHE_SECONDS = 5.0
KEY_CACHE_SIZE = 10_000
REFUSED = "invalid or revoked credentials"


@dataclass(frozen=True, slots=True)
class Principal:
    scope: Scope
    user_id: str | None
    agent_id: str | None
    key_id: str
    expires_at: float | None = None  # a JWT's `exp` (epoch seconds): when it stops working

    def may_access(self, user_id: str) -> bool:
        return self.scope is Scope.ADMIN or self.user_id == user_id

    def require(self, *scopes: Scope) -> None:
        if self.scope not in scopes:
            raise Forbidden(f"{self.scope.value} keys may not do this")

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

    def ended_by(self, event: Event) -> bool:
        """Whether the event takes this caller's API key away: its revocation, or the deletion
        of the user it is bound to (which deletes that user's keys). The configured admin key
        and JWTs are not stored keys: no event ends them."""
        if event.type == KEY_REVOKED:
            return self.key_id == event.ids.get("key_id")
        stored = self.key_id != ENV_ADMIN_KEY_ID and not self.key_id.startswith(JWT_KEY_ID_PREFIX)
        return event.type == USER_DELETED and stored and self.user_id == event.user_id


class Authenticator:
    """Checks tokens. API keys live in the database; a key checked in the last few seconds is
    remembered, so most requests are authenticated without leaving the event loop."""

    def __init__(self, vault: Vault, settings: Settings) -> None:
        self.vault = vault
        self.admin_key = settings.admin_key
        self.jwt_secret = settings.jwt_secret
        self._cache: dict[str, tuple[Principal, float]] = {}  # key hash -> (principal, expiry)
        self._unsubscribe = vault.events.subscribe(self._on_event)

    def close(self) -> None:
        self._unsubscribe()

    def _on_event(self, event: Event) -> None:
        """Forget keys as soon as they stop being valid: revoked, or their user deleted."""
        for digest, (principal, _) in list(self._cache.items()):
            if principal.ended_by(event):
                self._cache.pop(digest, None)

    def quick(self, token: str) -> Principal | None:
        """The principal, when telling it needs no database: the configured admin key, a JWT,
        or an API key checked within `KEY_CACHE_SECONDS`. None: ask `principal`.

        A revoked key is forgotten as soon as its `key.revoked` event arrives (a deleted user's
        keys, on `user.deleted`): at once when revoked through this process's vault, within
        moments from another process on PostgreSQL (the relay). Without a relay (several
        processes on one SQLite file) it keeps working here for at most `KEY_CACHE_SECONDS`.
        """
        if self.admin_key is not None and same_secret(token, self.admin_key):
            return Principal(Scope.ADMIN, None, None, ENV_ADMIN_KEY_ID)
        if not token.startswith(KEY_PREFIX):
            if self.jwt_secret is None:
                raise Unauthorized(REFUSED)
            return _from_jwt(token, self.jwt_secret)
        entry = self._cache.get(hash_secret(token))
        return None if entry is None or entry[1] < time.monotonic() else entry[0]

    def principal(self, token: str) -> Principal:
        """Any token, or `Unauthorized`. May read the database: call it off the event loop."""
        known = self.quick(token)
        if known is not None:
            return known
        key = self.vault.keys.authenticate(token)
        if key is None:
            raise Unauthorized(REFUSED)
        principal = Principal(key.scope, key.user_id, key.agent_id, key.id)
        if len(self._cache) >= KEY_CACHE_SIZE:
            self._cache.clear()
        self._cache[hash_secret(token)] = (principal, time.monotonic() + KEY_CACHE_SECONDS)
        return principal


def _from_jwt(token: str, secret: str) -> Principal:
    """A JWT signed with the shared secret: `sub` is the user; an `agent_id` claim narrows it to
    that agent. Expiry is checked when the token carries one."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["sub"]})
    except jwt.InvalidTokenError:
        raise Unauthorized(REFUSED) from None
    sub, agent = claims.get("sub"), claims.get("agent_id")
    if not isinstance(sub, str) or not (agent is None or isinstance(agent, str)):
        raise Unauthorized(REFUSED)
    digest = hashlib.sha256(sub.encode()).hexdigest()[:16]  # user ids stay out of logs
    scope = Scope.USER if agent is None else Scope.AGENT
    exp = claims.get("exp")  # checked by `decode`, so a number; cut to whole seconds, as it is
    expires_at = None if exp is None else float(int(exp))
    return Principal(scope, sub, agent, JWT_KEY_ID_PREFIX + digest, expires_at)
