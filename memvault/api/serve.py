"""`memvault serve`: open the vault, make sure an admin can get in, run the app under uvicorn."""

from __future__ import annotations

import gc
import logging

import uvicorn

from memvault.api.app import create_app
from memvault.config import Settings
from memvault.keys import Scope
from memvault.vault import Vault


def first_admin_key(vault: Vault, settings: Settings) -> str | None:
    """On a first start without `MEMVAULT_ADMIN_KEY`, create an admin key and return it, to be
    printed this once; otherwise None. Only its hash is kept."""
    if settings.admin_key or vault.keys.has_admin():
        return None
    _, secret = vault.keys.create(Scope.ADMIN, name="first admin key")
    return secret


def serve(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with Vault(settings=settings) as vault:
        secret = first_admin_key(vault, settings)
        if secret is not None:
            print("created an admin API key; it is shown only this once, keep it safe:")
            print(f"  {secret}")
        print(f"memvault listening on http://{settings.host}:{settings.port} "
              f"(data: {settings.data})", flush=True)  # fmt: skip
        vault.recall.prepare()
        app = create_app(vault, settings)
        gc.freeze()  # what startup built lives on: keep it out of every collection (tail latency)
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,  # memvault.access logs every request without bodies instead
            server_header=False,
        )
