"""Who the caller's token says it is: scope, user and agent. Any valid token may ask.

A client that was handed a token (the web UI, a script) learns from this whether it may pick
the user (an admin key) or is bound to one, without trying routes and reading refusals.
"""

from __future__ import annotations

from fastapi import APIRouter

from memvault.api.deps import PrincipalDep

router = APIRouter(prefix="/v1", tags=["keys"])


@router.get("/whoami")
def whoami(principal: PrincipalDep) -> dict[str, str | None]:
    """The token's scope (`admin`, `user`, `agent`), and the user and agent it is bound to
    (null for an admin key). Never the key's secret or its id."""
    return {
        "scope": principal.scope.value,
        "user_id": principal.user_id,
        "agent_id": principal.agent_id,
    }
