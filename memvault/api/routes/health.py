"""Liveness and readiness probes; no authentication, no details beyond up or down."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from memvault.api.deps import VaultDep
from memvault.api.errors import error_response
from memvault.errors import Unavailable
from memvault.store.database import RETRY_AFTER_SECONDS

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(vault: VaultDep) -> JSONResponse:
    """The database and the keyring answer."""
    try:
        vault.ping()
    except Exception:  # whatever the driver raises, the answer is the same: not ready
        down = Unavailable(
            "database or keyring unreachable", details={"retry_after": RETRY_AFTER_SECONDS}
        )
        return error_response(down)  # the 503 of any other route: envelope and Retry-After
    return JSONResponse({"status": "ready"})
