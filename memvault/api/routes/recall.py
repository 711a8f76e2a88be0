"""Recall: hybrid search over a user's turns and memories, and LLM context assembly.

An agent key gets no other agent's memories, here as everywhere: they are left out of its
search before ranking (so its page is full), and its context is assembled only from what it
may read (its own agent's memories, the user's turns, deployment-wide context).
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
from memvault.retrieval.search import Hit

router = APIRouter(prefix="/v1/users/{user_id}", tags=["recall"])
HIT_FIELDS = tuple(f.name for f in dataclasses.fields(Hit) if f.name != "item")


def hit_dict(hit: Hit) -> dict[str, Any]:
    return {name: to_jsonable(getattr(hit, name)) for name in HIT_FIELDS}


def seen_by(principal: Principal) -> str | None:
    """The agent whose view of the user this key has: its own, for an agent key; else none."""
    return principal.agent_id if principal.scope is Scope.AGENT else None


@router.post("/search")
def search(
    user_id: UserId, body: SearchIn, vault: VaultDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Ranked hits, best first (`explain` adds each signal's part in the score)."""
    fields = body.fields()
    hits = vault.search(user_id, fields.pop("query"), seen_by_agent=seen_by(principal), **fields)
    return {"items": [hit_dict(h) for h in hits], "next": None}


@router.post("/context")
def context(user_id: UserId, body: ContextIn, vault: VaultDep, principal: PrincipalDep) -> Any:
    """What an LLM should know for this query: `text` to put in the prompt, and its `items`.

    An agent key's context is built from what that key may read, so nothing of another
    agent's memories reaches its prompt (or its `dropped` list)."""
    fields = body.fields()
    query = fields.pop("query")
    return to_jsonable(vault.context(user_id, query, agent_id=seen_by(principal), **fields))
