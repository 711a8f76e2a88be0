"""Two pure ASGI middlewares: structured access logs, and the request body limit.

Pure ASGI (not `BaseHTTPMiddleware`) so bodies stream through untouched and WebSockets pass by.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memvault.api.errors import envelope, internal_error

access_log = logging.getLogger("memvault.access")
log = logging.getLogger(__name__)

KEY_ID = "memvault.key_id"  # set in the scope by authentication, read back for the log line


class AccessLog:
    """One JSON line per request or WebSocket: method (`WS` for a socket), route template,
    status (the close code for a socket), time, key id. No bodies, no query strings, no
    secrets. Also the last guard: an unexpected exception becomes a bare 500 (or close 1011)
    and is logged by its class only, because messages and traces may carry user content."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        http = scope["type"] == "http"
        started = time.perf_counter()
        request_id = uuid.uuid4().hex[:16]
        status = 500 if http else 1000
        response_started = False

        async def send_logged(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            elif message["type"] == "websocket.close":
                status = message.get("code", 1000)
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        except Exception as exc:
            log.error("unhandled %s in request %s", type(exc).__name__, request_id)
            if not http:
                status = 1011
            elif not response_started:
                await internal_error()(scope, receive, send_logged)
        finally:
            route = scope.get("route")
            access_log.info(
                json.dumps(
                    {
                        "request_id": request_id,
                        "method": scope["method"] if http else "WS",
                        "route": getattr(route, "path", None) or "(unmatched)",
                        "status": status,
                        "ms": round((time.perf_counter() - started) * 1000, 2),
                        "key_id": scope.get(KEY_ID),
                    }
                )
            )


class BodyLimit:
    """Refuse bodies over `max_bytes` with 413: by Content-Length up front, or while streaming.

    A streamed overrun raises `HTTPException(413)` from inside `receive`, which FastAPI lets
    through its body parsing, so it ends in the same error envelope.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = f"request body over the limit of {max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await envelope(413, "too_large", self.message)(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self.message)
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
