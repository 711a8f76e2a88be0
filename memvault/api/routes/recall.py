"""Recall: hybrid search over a user's turns and memories, and LLM context assembly.

An agent key gets no other agent's memories, here as everywhere: they are dropped from its
search hits, and its context is assembled only from what it may read (its own agent's
memories, the user's turns, deployment-wide context).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter

from memvault.api.auth import Principal
from memvault.api.deps import PrincipalDep, UserId, VaultDep
from memvault.api.schemas import ContextIn, SearchIn
from memvault.keys import Scope
from memvault.model import to_jsonable
from memvault.retrieval.items import MEMORY
from memvault.retrieval.search import Hit

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
    agent_id = principal.agent_id if principal.scope is Scope.AGENT else None
    return to_jsonable(vault.context(user_id, fields.pop("query"), agent_id=agent_id, **fields))
