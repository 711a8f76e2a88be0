"""Recall: hybrid search over a user's turns and memories, and LLM context assembly.

An agent key gets no other agent's memories, here as everywhere: they are dropped from its
search hits, and its context is assembled only from what it may read (its own agent's
memories, the user's turns, deployment-wide context).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter

from memvault.api.auth import Principal
from memvault.api.deps import PrincipalDep, UserId, VaultDep
from memvault.api.schemas import ContextIn, SearchIn
from memvault.keys import Scope
from memvault.mind.context import (
    Context,
    Sources,
    build_context,
    check_budget,
    check_channel_limits,
)
from memvault.model import Turn, to_jsonable
from memvault.retrieval.items import MEMORY
from memvault.retrieval.search import Hit
from memvault.vault import Vault

router = APIRouter(prefix="/v1/users/{user_id}", tags=["recall"])
HIT_FIELDS = tuple(f.name for f in dataclasses.fields(Hit) if f.name != "item")


def hit_dict(hit: Hit) -> dict[str, Any]:
    return {name: to_jsonable(getattr(hit, name)) for name in HIT_FIELDS}


def visible_hits(principal: Principal, hits: list[Hit]) -> list[Hit]:
    """Turn hits, and the memory hits of agents the key sees (all, but for an agent key)."""
    return [
        h
        for h in hits
        if h.type != MEMORY or principal.sees_agent(None if h.item is None else h.item.agent_id)
    ]


@router.post("/search")
def search(
    user_id: UserId, body: SearchIn, vault: VaultDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Ranked hits, best first (`explain` adds each signal's part in the score)."""
    fields = body.fields()
    hits = vault.search(user_id, fields.pop("query"), **fields)
    return {"items": [hit_dict(h) for h in visible_hits(principal, hits)], "next": None}


@router.post("/context")
def context(user_id: UserId, body: ContextIn, vault: VaultDep, principal: PrincipalDep) -> Any:
    """What an LLM should know for this query: `text` to put in the prompt, and its `items`.

    An agent key's context is built from what that key may read, so nothing of another
    agent's memories reaches its prompt (or its `dropped` list)."""
    fields = body.fields()
    query = fields.pop("query")
    if principal.scope is Scope.AGENT:
        return to_jsonable(agent_context(vault, principal, user_id, query, **fields))
    return to_jsonable(vault.context(user_id, query, **fields))


def agent_context(
    vault: Vault,
    principal: Principal,
    user_id: str,
    query: str,
    *,
    session_id: str | None = None,
    token_budget: int = 2000,
    channel_limits: Mapping[str, int] | None = None,
    now: datetime | None = None,
    min_score: float = 0.2,
) -> Context:
    """`Vault.context` as an agent key sees the user: the same sections and budget, with the
    memories narrowed to its own agent's, as its memory list and search are.

    Gathered here from `Vault`'s public reads rather than by filtering `Vault.context`'s
    answer, because that answer has already spent its budget on lines the agent may not see.
    """
    check_budget(token_budget)
    limits = check_channel_limits(channel_limits)
    hits = vault.search(user_id, query, limit=50, now=now, min_score=min_score)
    agent = principal.agent_id
    sources = Sources(
        global_entries=vault.list_global_context(),
        pinned=vault.list_memories(
            user_id, pinned=True, agent_id=agent, include_superseded=False, now=now
        ),
        facts=vault.list_memories(
            user_id, kinds=["fact"], pinned=False, agent_id=agent, include_superseded=False, now=now
        ),
        hits=visible_hits(principal, hits),
        recent=_recent_turns(vault, user_id, session_id, limits),
    )
    return build_context(sources, token_budget=token_budget)


def _recent_turns(
    vault: Vault, user_id: str, session_id: str | None, limits: Mapping[str, int]
) -> list[Turn]:
    """The session's latest turns, up to each channel's limit, oldest first."""
    if session_id is None:
        return []
    recent: list[Turn] = []
    for channel, limit in limits.items():
        if limit:
            recent += vault.recent_turns(
                user_id, session_id=session_id, channel=channel, limit=limit
            )
    return sorted(recent, key=lambda t: t.seq)
