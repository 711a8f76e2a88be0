"""`memvault serve`: open the vault, make sure an admin can get in, run the app under uvicorn."""

from __future__ import annotations

import gc
import logging

import uvicorn

from memvault.api.app import create_app
from memvault.config import Settings
from memvault.keys import Scope
from memvault.upkeep import Upkeep
from memvault.vault import Vault


def first_admin_key(vault: Vault, settings: Settings) -> str | None:
    """On a first start without `MEMVAULT_ADMIN_KEY`, create an admin key and return it, to be
    printed this once; otherwise None. Only its hash is kept."""
    if settings.admin_key or vault.keys.has_admin():
        return None
    _, secret = vault.keys.create(Scope.ADMIN, name="first admin key")
    return secret


def settle_garbage() -> None:
    """Collect, then freeze what survives.

    A full collection walks every object not frozen, holding the GIL: with a 100k-item index
    held, 110 ms, paid by whichever request happens to trigger it. Run after an index grew by
    many items (on a request that was slow anyway: it just built them), it leaves later full
    collections nothing big to walk (0.0 ms measured after it). Frozen objects are still freed
    when their last reference goes, and indexes hold no reference cycles (a test keeps it so),
    so an evicted index does not leak.
    """
    gc.collect()
    gc.freeze()


def prepare(vault: Vault) -> None:
    """What a server process does before it listens: load the search models, and settle the
    garbage collector after every large index build."""
    vault.recall.prepare()
    vault.recall.cache.on_grown = settle_garbage


def serve(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with Vault(settings=settings) as vault:
        secret = first_admin_key(vault, settings)
        if secret is not None:
            print("created an admin API key; it is shown only this once, keep it safe:")
            print(f"  {secret}")
        prepare(vault)
        print(f"memvault listening on http://{settings.host}:{settings.port} "
              f"(data: {settings.data})", flush=True)  # fmt: skip
        app = create_app(vault, settings)
        upkeep = None
        if settings.consolidation_delay > 0:
            upkeep = Upkeep(vault, settings.consolidation_delay)
        gc.freeze()  # what startup built lives on: keep it out of every collection (tail latency)
        try:
            uvicorn.run(
                app,
                host=settings.host,
                port=settings.port,
                log_config=None,
                access_log=False,  # memvault.access logs every request without bodies instead
                server_header=False,
            )
        finally:
            if upkeep is not None:
                upkeep.close()
