"""Agents: the multi-AI handshake, and a user's list of agents."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from memvault.api.deps import OwnerDep, PrincipalDep, UserId, VaultDep
from memvault.api.pages import page
from memvault.api.schemas import HandshakeIn
from memvault.errors import Invalid, NotFound
from memvault.keys import Scope

router = APIRouter(prefix="/v1", tags=["agents"])


@router.post("/handshake")
def handshake(body: HandshakeIn, vault: VaultDep, principal: OwnerDep) -> dict[str, Any]:
    """Register an agent for a user by name (or find the one with that name) and issue it a
    key of its own. The key is in this answer only."""
    user_id = body.user_id or principal.user_id
    if user_id is None:
        raise Invalid("user_id", "is required with an admin key")
    if not principal.may_access(user_id):
        raise NotFound("no such user")
    agent = vault.register_agent(user_id, body.name, body.description)
    key, secret = vault.keys.create(Scope.AGENT, user_id, agent.id, name=f"agent {agent.id}")
    return {"agent": agent.to_dict(), "agent_id": agent.id, "key": secret, "key_id": key.id}


@router.get("/users/{user_id}/agents")
def list_agents(user_id: UserId, vault: VaultDep, _: PrincipalDep) -> dict[str, Any]:
    return page(vault.list_agents(user_id), None, None)
