"""Whose conversation a proxied request is, which session it belongs to, and how much memory
it wants: from the key, the body's `user` and two headers.

A user key speaks for its user and an agent key for its agent of its user, as everywhere in the
API; the body's `user` (OpenAI's end-user field) may name that same user and no other. An admin
key serves many users, so the body's `user` says which one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memvault import validate as v
from memvault.api.auth import Principal
from memvault.errors import BadRequest, Invalid, NotFound
from memvault.keys import Scope
from memvault.mind.context import MAX_TOKEN_BUDGET

SESSION_HEADER = "X-Memvault-Session"
CONTEXT_TOKENS_HEADER = "X-Memvault-Context-Tokens"
DEFAULT_SESSION = "chat"
DEFAULT_CONTEXT_TOKENS = 1000


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    agent_id: str | None  # an agent key's agent: its turns, and its view of the user's memory
    session_id: str
    context_tokens: int  # 0: no memory in the prompt


def user_of(principal: Principal, body: Mapping[str, Any]) -> str:
    named = body.get("user")
    if principal.scope is Scope.ADMIN:
        if named is None:
            raise BadRequest("user", "an admin key must name the user (OpenAI's `user` field)")
        return v.check_id("user", named)
    if named is not None and not principal.may_access(named):
        raise NotFound("no such user")  # as for any other user's path: nothing said about it
    assert principal.user_id is not None  # user and agent keys are bound to a user
    return principal.user_id


def context_tokens(header: str | None) -> int:
    """The memory budget in tokens: the header's, or the default; 0 turns memory off."""
    if header is None:
        return DEFAULT_CONTEXT_TOKENS
    try:
        tokens = int(header)
    except ValueError:
        tokens = -1
    if not 0 <= tokens <= MAX_TOKEN_BUDGET:
        raise Invalid(CONTEXT_TOKENS_HEADER, f"must be an integer from 0 to {MAX_TOKEN_BUDGET}")
    return tokens


def caller_of(principal: Principal, body: Mapping[str, Any], headers: Mapping[str, str]) -> Caller:
    session = headers.get(SESSION_HEADER)
    return Caller(
        user_id=user_of(principal, body),
        agent_id=principal.agent_id if principal.scope is Scope.AGENT else None,
        session_id=DEFAULT_SESSION if session is None else v.check_id(SESSION_HEADER, session),
        context_tokens=context_tokens(headers.get(CONTEXT_TOKENS_HEADER)),
    )
