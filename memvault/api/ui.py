"""The web UI: static files from `memvault/web/`, served at `/ui/` with strict headers.

The page is plain HTML, one JS module and one CSS file that call the REST API with the key the
person pastes in; the server holds no UI state and needs no session. The headers are the second
line of defence behind the page inserting stored content as text only: the Content-Security-
Policy allows no inline script, no other origin and no plugins, so even markup that slipped
into the page could not run.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
UI_PATH = "/ui"
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",  # forms are handled by the script, never submitted
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-cache"),  # revalidate, so an upgraded server serves its own UI
)


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every answer of the wrapped app (404s and redirects too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                kept = [(n, v) for n, v in message.get("headers", []) if n.lower() not in names]
                message["headers"] = kept + list(SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount_ui(app: FastAPI) -> None:
    """Serve the UI at `/ui/` (an index.html for the folder) and send `/` there."""
    static = StaticFiles(directory=WEB_DIR, html=True)
    app.mount(UI_PATH, SecurityHeaders(static), name="ui")

    @app.get("/", include_in_schema=False)
    def to_ui() -> RedirectResponse:
        return RedirectResponse(f"{UI_PATH}/")
