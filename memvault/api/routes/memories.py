"""Memories: add, list with filters, read, edit or move (tier/kind), supersede, delete.

An agent key works only with its own agent's memories: others answer 404, like missing ones.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from memvault.api.auth import Principal
from memvault.api.deps import PrincipalDep, UserId, VaultDep
from memvault.api.pages import offset_cursor, page
from memvault.api.schemas import MemoryIn, MemoryPatch, MemoryQuery, MemorySupersede
from memvault.errors import NotFound
from memvault.keys import Scope
from memvault.model import Memory
from memvault.vault import Vault

router = APIRouter(prefix="/v1/users/{user_id}/memories", tags=["memories"])


@router.post("", status_code=201)
def add_memory(
    user_id: UserId, body: MemoryIn, vault: VaultDep, principal: PrincipalDep
) -> dict[str, Any]:
    return vault.add_memory(user_id, **principal.stamp_agent(body.fields())).to_dict()


@router.get("")
def list_memories(
    user_id: UserId,
    query: Annotated[MemoryQuery, Query()],
    vault: VaultDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """Newest first. `kind`, `tier` and `tag` repeat; every filter narrows the list."""
    agent_id = query.agent_id
    if principal.scope is Scope.AGENT:
        if agent_id not in (None, principal.agent_id):
            return page([], query.limit, None)
        agent_id = principal.agent_id
    offset = offset_cursor(query.cursor)
    memories = vault.list_memories(
        user_id, kinds=query.kind, tiers=query.tier, agent_id=agent_id, category=query.category,
        tags=query.tag, pinned=query.pinned, include_superseded=query.include_superseded,
        include_expired=query.include_expired, limit=query.limit, offset=offset,
    )  # fmt: skip
    return page(memories, query.limit, str(offset + len(memories)))


def visible_memory(vault: Vault, principal: Principal, user_id: str, memory_id: str) -> Memory:
    memory = vault.get_memory(user_id, memory_id)
    if not principal.sees_agent(memory.agent_id):
        raise NotFound("no such memory")
    return memory


@router.get("/{memory_id}")
def get_memory(
    user_id: UserId, memory_id: str, vault: VaultDep, principal: PrincipalDep
) -> dict[str, Any]:
    return visible_memory(vault, principal, user_id, memory_id).to_dict()


@router.patch("/{memory_id}")
def update_memory(
    user_id: UserId, memory_id: str, body: MemoryPatch, vault: VaultDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Edit text and fields, or move the memory to another `tier` or `kind`."""
    visible_memory(vault, principal, user_id, memory_id)
    return vault.update_memory(user_id, memory_id, **principal.stamp_agent(body.fields())).to_dict()


@router.post("/{memory_id}/supersede", status_code=201)
def supersede_memory(
    user_id: UserId, memory_id: str, body: MemorySupersede, vault: VaultDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Replace a memory that no longer holds: answers the new one; the old one is kept, its
    validity closed and pointing to its successor (409 when it already has one)."""
    visible_memory(vault, principal, user_id, memory_id)
    fields = principal.stamp_agent(body.fields())
    return vault.supersede_memory(user_id, memory_id, fields.pop("text"), **fields).to_dict()


@router.delete("/{memory_id}", status_code=204)
def delete_memory(
    user_id: UserId, memory_id: str, vault: VaultDep, principal: PrincipalDep
) -> Response:
    visible_memory(vault, principal, user_id, memory_id)
    vault.delete_memory(user_id, memory_id)
    return Response(status_code=204)
