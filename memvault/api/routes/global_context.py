"""Deployment-wide context shared by every user: any key reads it, admin keys change it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from memvault.api.deps import AdminDep, PrincipalDep, VaultDep
from memvault.api.pages import page
from memvault.api.schemas import GlobalContextIn
from memvault.errors import NotFound

router = APIRouter(prefix="/v1/global-context", tags=["global context"])


@router.get("")
def list_global_context(vault: VaultDep, _: PrincipalDep) -> dict[str, Any]:
    return page(vault.list_global_context(), None, None)


@router.get("/{key}")
def get_global_context(key: str, vault: VaultDep, _: PrincipalDep) -> dict[str, Any]:
    for entry in vault.list_global_context():
        if entry.key == key:
            return entry.to_dict()
    raise NotFound("no such global context entry")


@router.put("/{key}")
def set_global_context(
    key: str, body: GlobalContextIn, vault: VaultDep, _: AdminDep
) -> dict[str, Any]:
    return vault.set_global_context(key, body.text).to_dict()


@router.delete("/{key}", status_code=204)
def delete_global_context(key: str, vault: VaultDep, _: AdminDep) -> Response:
    vault.delete_global_context(key)
    return Response(status_code=204)
