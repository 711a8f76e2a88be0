"""API key management (admin keys only). A new key's secret is in the create answer only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from memvault.api.deps import AdminDep, VaultDep
from memvault.api.pages import page
from memvault.api.schemas import KeyIn

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.post("", status_code=201)
def create_key(body: KeyIn, vault: VaultDep, _: AdminDep) -> dict[str, Any]:
    key, secret = vault.keys.create(body.scope, body.user_id, body.agent_id, body.name)
    return {**key.to_dict(), "key": secret}


@router.get("")
def list_keys(vault: VaultDep, _: AdminDep, include_revoked: bool = False) -> dict[str, Any]:
    return page(vault.keys.list(include_revoked=include_revoked), None, None)


@router.delete("/{key_id}", status_code=204)
def revoke_key(key_id: str, vault: VaultDep, _: AdminDep) -> Response:
    vault.keys.revoke(key_id)  # its key.revoked event drops it from every server's cache
    return Response(status_code=204)
