"""Sessions and their turns."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from memvault.api.appends import AppendBatcher
from memvault.api.deps import PrincipalDep, UserId, VaultDep
from memvault.api.pages import offset_cursor, page, time_id_cursor, time_id_next
from memvault.api.schemas import SessionPatch, TurnsIn

router = APIRouter(prefix="/v1/users/{user_id}/sessions", tags=["sessions"])
Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get("")
def list_sessions(
    user_id: UserId, vault: VaultDep, _: PrincipalDep, limit: Limit = 50, cursor: str | None = None
) -> dict[str, Any]:
    """Sessions by last activity, newest first; pass `next` back as `cursor` for older ones.
    The cursor is checked here, so that a bad one is named as the caller wrote it."""
    before, before_id = time_id_cursor(cursor)
    sessions = vault.list_sessions(user_id, limit=limit, before=before, before_id=before_id)
    last = time_id_next(sessions[-1].updated_at, sessions[-1].id) if sessions else None
    return page(sessions, limit, last)


@router.get("/{session_id}")
def get_session(
    user_id: UserId, session_id: str, vault: VaultDep, _: PrincipalDep
) -> dict[str, Any]:
    """The session with all its turns, in order."""
    return vault.get_session(user_id, session_id).to_dict()


@router.patch("/{session_id}")
def update_session(
    user_id: UserId, session_id: str, body: SessionPatch, vault: VaultDep, _: PrincipalDep
) -> dict[str, Any]:
    return vault.update_session(user_id, session_id, **body.fields()).to_dict()


@router.delete("/{session_id}", status_code=204)
def delete_session(user_id: UserId, session_id: str, vault: VaultDep, _: PrincipalDep) -> Response:
    vault.delete_session(user_id, session_id)
    return Response(status_code=204)


@router.post("/{session_id}/turns", status_code=201)
async def add_turns(
    user_id: UserId,
    session_id: str,
    body: TurnsIn,
    request: Request,
    principal: PrincipalDep,
) -> JSONResponse:
    """Append one turn (answers the turn) or a list (answers `items`), durably, in one
    transaction; concurrent appends share a commit (see `memvault.api.appends`)."""
    turns = body if isinstance(body, list) else [body]
    fields = [principal.stamp_agent(t.fields()) for t in turns]
    batcher: AppendBatcher = request.app.state.appends
    stored = await batcher.add_turns(user_id, session_id, fields)
    answer = page(stored, None, None) if isinstance(body, list) else stored[0].to_dict()
    return JSONResponse(answer, status_code=201)


@router.get("/{session_id}/turns")
def session_turns(
    user_id: UserId,
    session_id: str,
    vault: VaultDep,
    _: PrincipalDep,
    limit: Limit = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Turns in order, a page at a time; pass `next` back as `cursor` for the following page."""
    after = offset_cursor(cursor)
    turns = vault.session_turns(user_id, session_id, after_seq=after, limit=limit)
    return page(turns, limit, str(turns[-1].seq) if turns else None)
