"""API keys: who may call the server, and on whose behalf.

A key is `mvk_` followed by 32 random bytes in URL-safe base64. Only its SHA-256 is stored, so a
copy of the database does not hand out access; the key itself is shown once, when it is made.
Each key carries a scope: `admin` (every user, global context, keys), `user` (one user id) or
`agent` (one agent of one user). The server derives the user a request may touch from the key.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from memvault import validate as v
from memvault.errors import Invalid, NotFound
from memvault.events import Event, EventBus
from memvault.model import _Serialisable, format_ts, new_id, parse_ts, utcnow
from memvault.store import Store
from memvault.store.database import Row

KEY_PREFIX = "mvk_"
SHOWN_PREFIX_LENGTH = len(KEY_PREFIX) + 6


class Scope(enum.StrEnum):
    ADMIN = "admin"
    USER = "user"
    AGENT = "agent"


@dataclass(frozen=True, slots=True)
class ApiKey(_Serialisable):
    """A key's record: never the key itself."""

    id: str
    scope: Scope
    user_id: str | None
    agent_id: str | None
    name: str | None
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None


def new_secret() -> str:
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def hash_secret(secret: str) -> str:
    """SHA-256 is enough: the secret has 256 random bits, so there is nothing to brute-force."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    """Compare two secrets in constant time, by their hashes (any lengths)."""
    return hmac.compare_digest(hash_secret(given), hash_secret(expected))


def _api_key(row: Row) -> ApiKey:
    revoked = row["revoked_at"]
    return ApiKey(
        id=row["id"], scope=Scope(row["scope"]), user_id=row["user_id"],
        agent_id=row["agent_id"], name=row["name"], prefix=row["prefix"],
        created_at=parse_ts(row["created_at"]),
        revoked_at=None if revoked is None else parse_ts(revoked),
    )  # fmt: skip


KEY_REVOKED = "key.revoked"


class ApiKeys:
    """Create, check, list and revoke keys in the store shared by every server process.

    A revocation is also published as a `key.revoked` event (its key id only, under no user),
    so that servers remembering the key for a few seconds forget it at once: in this process
    through the event bus, in the others through the PostgreSQL relay.
    """

    def __init__(self, store: Store, events: EventBus | None = None) -> None:
        self._store = store
        self._events = events

    def create(
        self,
        scope: str,
        user_id: str | None = None,
        agent_id: str | None = None,
        name: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret: the only time the secret is available."""
        kind = v.check_enum("scope", scope, Scope)
        user_id = v.check_optional_id("user_id", user_id)
        agent_id = v.check_optional_id("agent_id", agent_id)
        name = v.check_optional_text("name", name, max_bytes=256)
        if kind is Scope.ADMIN and (user_id or agent_id):
            raise Invalid("user_id", "an admin key is not bound to a user")
        if kind is not Scope.ADMIN and user_id is None:
            raise Invalid("user_id", f"is required for a {kind.value} key")
        if kind is Scope.AGENT:
            if agent_id is None:
                raise Invalid("agent_id", "is required for an agent key")
            assert user_id is not None
            if all(row["id"] != agent_id for row in self._store.list_agents(user_id)):
                raise Invalid("agent_id", "no such agent for this user")
        elif agent_id is not None:
            raise Invalid("agent_id", "only an agent key names an agent")
        secret = new_secret()
        row = {
            "id": new_id(), "secret_hash": hash_secret(secret),
            "prefix": secret[:SHOWN_PREFIX_LENGTH], "scope": kind.value, "user_id": user_id,
            "agent_id": agent_id, "name": name, "created_at": format_ts(utcnow()),
            "revoked_at": None,
        }  # fmt: skip
        self._store.insert_api_key(row)
        return _api_key(row), secret

    def authenticate(self, secret: str) -> ApiKey | None:
        """The live key this secret belongs to, or None."""
        if not secret.startswith(KEY_PREFIX):
            return None
        row = self._store.find_api_key(hash_secret(secret))
        return None if row is None else _api_key(row)

    def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        keys = [_api_key(row) for row in self._store.list_api_keys()]
        return [k for k in keys if include_revoked or k.revoked_at is None]

    def revoke(self, key_id: str) -> None:
        v.check_id("key_id", key_id)
        if not self._store.revoke_api_key(key_id, format_ts(utcnow())):
            raise NotFound("no such key")
        if self._events is not None:
            self._events.publish(Event(KEY_REVOKED, "", {"key_id": key_id}))

    def has_admin(self) -> bool:
        return any(k.scope is Scope.ADMIN for k in self.list())
