"""Users: profile, delete (crypto-shred), statistics, export, import, clear, consolidate."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from memvault.api.deps import AdminDep, OwnerDep, PrincipalDep, UserId, VaultDep
from memvault.api.exports import jsonl_lines, markdown
from memvault.api.pages import page
from memvault.api.schemas import ClearIn, ConsolidateIn, UserIn
from memvault.model import to_jsonable
from memvault.validate import check_id

router = APIRouter(prefix="/v1/users/{user_id}", tags=["users"])
# the list of users: across users, so for admin keys only
directory = APIRouter(prefix="/v1/users", tags=["users"])
Limit = Annotated[int, Query(ge=1, le=1000)]


class ExportFormat(StrEnum):
    JSON = "json"
    JSONL = "jsonl"
    MARKDOWN = "markdown"


@directory.get("")
def list_users(
    vault: VaultDep,
    _: AdminDep,
    limit: Limit = 50,
    cursor: str | None = None,
    prefix: str | None = None,
) -> dict[str, Any]:
    """Users by id, with their profiles; `prefix` keeps the ids that start with it. Pass `next`
    back as `cursor` for the following page."""
    after = None if cursor is None else check_id("cursor", cursor)
    users = vault.list_users(limit=limit, after=after, prefix=prefix)
    return page(users, limit, users[-1].id if users else None)


@router.put("")
def put_user(user_id: UserId, body: UserIn, vault: VaultDep, _: OwnerDep) -> dict[str, Any]:
    """Create the user, or replace their profile attributes."""
    return vault.put_user(user_id, body.profile).to_dict()


@router.get("")
def get_user(user_id: UserId, vault: VaultDep, _: PrincipalDep) -> dict[str, Any]:
    return vault.get_user(user_id).to_dict()


@router.delete("", status_code=204)
def delete_user(user_id: UserId, vault: VaultDep, _: OwnerDep) -> Response:
    """Crypto-shred: the user's data key is destroyed, then their rows."""
    vault.delete_user(user_id)
    return Response(status_code=204)


@router.get("/stats")
def stats(user_id: UserId, vault: VaultDep, _: OwnerDep) -> Any:
    """Counts of the whole user, every agent's memories included: not for agent keys, which
    see only their own agent's memories."""
    return to_jsonable(vault.stats(user_id))


@router.get("/export")
def export_user(
    user_id: UserId, vault: VaultDep, _: OwnerDep, format: ExportFormat = ExportFormat.JSON
) -> Response:
    """Everything of the user: `json` (importable), `jsonl` or `markdown`."""
    document = vault.export_user(user_id)
    if format is ExportFormat.JSONL:
        return StreamingResponse(jsonl_lines(document), media_type="application/x-ndjson")
    if format is ExportFormat.MARKDOWN:
        return PlainTextResponse(markdown(document), media_type="text/markdown")
    return JSONResponse(document)


@router.post("/import", status_code=201)
def import_user(
    user_id: UserId, document: Annotated[dict[str, Any], Body()], vault: VaultDep, _: OwnerDep
) -> dict[str, Any]:
    """Load a JSON export into this user; any clash with existing data is a 409, nothing lands."""
    return vault.import_user(document, user_id=user_id).to_dict()


@router.post("/clear")
def clear(
    user_id: UserId, vault: VaultDep, _: OwnerDep, body: ClearIn | None = None
) -> dict[str, int]:
    """Forget conversation history (one channel, or all); memories stay."""
    channel = None if body is None else body.channel
    return {"deleted": vault.clear(user_id, channel=channel)}


@router.post("/consolidate")
def consolidate(
    user_id: UserId, vault: VaultDep, _: OwnerDep, body: ConsolidateIn | None = None
) -> dict[str, Any]:
    """Run the consolidation rules over the user's memories and sessions (`{"now"?}` to judge
    ages against another time); answers what was done, as ids per action, and counts."""
    now = None if body is None else body.now
    return vault.consolidate(user_id, now=now).to_dict()
