"""Recall: hybrid search over a user's turns and memories, and LLM context assembly.

An agent key gets no other agent's memories: they are dropped from its search hits, and
context (which draws on all of the user's memories) is for user and admin keys only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter

from memvault.api.deps import OwnerDep, PrincipalDep, UserId, VaultDep
from memvault.api.schemas import ContextIn, SearchIn
from memvault.model import to_jsonable
from memvault.retrieval.items import MEMORY
from memvault.retrieval.search import Hit

router = APIRouter(prefix="/v1/users/{user_id}", tags=["recall"])
HIT_FIELDS = tuple(f.name for f in dataclasses.fields(Hit) if f.name != "item")


def hit_dict(hit: Hit) -> dict[str, Any]:
    return {name: to_jsonable(getattr(hit, name)) for name in HIT_FIELDS}


@router.post("/search")
def search(
    user_id: UserId, body: SearchIn, vault: VaultDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Ranked hits, best first (`explain` adds each signal's part in the score)."""
    fields = body.fields()
    hits = vault.search(user_id, fields.pop("query"), **fields)
    visible = [
        h
        for h in hits
        if h.type != MEMORY or principal.sees_agent(None if h.item is None else h.item.agent_id)
    ]
    return {"items": [hit_dict(h) for h in visible], "next": None}


@router.post("/context")
def context(user_id: UserId, body: ContextIn, vault: VaultDep, _: OwnerDep) -> Any:
    """What an LLM should know for this query: `text` to put in the prompt, and its `items`."""
    fields = body.fields()
    return to_jsonable(vault.context(user_id, fields.pop("query"), **fields))
