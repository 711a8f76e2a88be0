"""The application factory: one FastAPI app around one `Vault`.

`create_app` wires the pieces (routes, auth, limits, logs, the WebSocket hub, the web UI) and
nothing else; the caller owns the vault and closes it after the app stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from memvault import __version__
from memvault.api.appends import AppendBatcher
from memvault.api.auth import Authenticator
from memvault.api.errors import install_error_handlers
from memvault.api.middleware import AccessLog, BodyLimit
from memvault.api.proxy.chat import ChatProxy
from memvault.api.ratelimit import RateLimiter
from memvault.api.routes import (
    agents,
    chat,
    global_context,
    health,
    keys,
    memories,
    recall,
    sessions,
    users,
    whoami,
)
from memvault.api.ui import mount_ui
from memvault.api.ws import Hub
from memvault.api.ws import router as ws_router
from memvault.config import Settings
from memvault.llm import LlmClient
from memvault.vault import Vault

ROUTERS = (  # the hot path (appends) first: routes are matched in order
    sessions.router, health.router, users.directory, users.router, memories.router,
    recall.router, agents.router, global_context.router, keys.router, whoami.router,
    chat.router, ws_router,
)  # fmt: skip


def create_app(vault: Vault, settings: Settings | None = None) -> FastAPI:
    settings = settings or vault.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = Hub(vault, asyncio.get_running_loop())
        app.state.hub = hub
        try:
            yield
        finally:
            await app.state.appends.drain()
            hub.close()
            app.state.auth.close()
            if llm is not None:
                await llm.aclose()

    app = FastAPI(
        title="memvault",
        version=__version__,
        description="Long-term, encrypted, per-user memory for AI assistants and agents.",
        lifespan=lifespan,
    )
    app.state.vault = vault
    app.state.settings = settings
    app.state.auth = Authenticator(vault, settings)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute)
    app.state.appends = AppendBatcher(vault)
    llm = LlmClient.from_settings(settings)  # one connection pool to the LLM, closed at the end
    app.state.chat_proxy = ChatProxy(vault, app.state.appends, llm)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    mount_ui(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog)  # added last: outermost, so it sees every answer
    return app
