"""The LLM's stream relayed to the client as it arrives, and its answer saved however it ends.

A stream ends in one of four ways: the LLM's stream ends (the answer is whole, and saved before
the end of the stream is sent to the client); it breaks off, or closes before its finish reason
(saved as far as it got, `partial`); the client goes away mid-way; or the client is gone before
the first byte. In all of them the LLM's stream is closed at once, which frees the connection
and, for most servers, stops the LLM's work.

Starlette's `StreamingResponse` does not promise that: a server of ASGI 2.4 tells of a client
gone by raising from `send`, and Starlette then skips the response's background task; a relay
cancelled while it waits to send leaves its generator for the garbage collector to close. So
the relay is a response of its own, whose clean-up is a `finally` of the whole response.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress

import anyio
from anyio.abc import TaskGroup
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from memvault.api.proxy.answer import Answer, StreamedAnswer
from memvault.errors import LlmUnreachable
from memvault.llm import ChatStream

log = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"

SaveAnswer = Callable[[Answer, bool], Awaitable[None]]  # the answer, and whether it is partial


async def client_gone(receive: Receive) -> None:
    """Return once the client has disconnected (the request's body is read by then)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class RelayResponse(Response):
    """Relays an open `ChatStream` as server-sent events, gathering its answer, and hands the
    answer to `save` once, closing the LLM's stream first, however the response ends."""

    media_type = EVENT_STREAM

    def __init__(self, stream: ChatStream, save: SaveAnswer) -> None:
        self.stream = stream
        self.save = save
        self.gathered = StreamedAnswer()
        self.status_code = stream.status
        self.background = None
        self._finished = False
        self.init_headers({"Cache-Control": "no-cache"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._relay_then_stop, send, group)
                await client_gone(receive)
                group.cancel_scope.cancel()
        finally:
            await self.finish()

    async def _relay_then_stop(self, send: Send, group: TaskGroup) -> None:
        with suppress(OSError):  # the client went away, as an ASGI 2.4 server tells it
            await self._relay(send)
        group.cancel_scope.cancel()

    async def _relay(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # fmt: skip
        try:
            async for event in self.stream.events():
                self.gathered.feed(event)
                await send({"type": "http.response.body", "body": event.encode(),
                            "more_body": True})  # fmt: skip
        except LlmUnreachable as exc:
            log.warning("chat proxy: the LLM's stream broke off (%s)", exc.message)
        await self.finish()  # saved before the client sees the stream end
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def finish(self) -> None:
        """Close the LLM's stream and save the answer: whole once the LLM said why it stopped,
        partial (as far as it got) otherwise. Once, whichever way of ending gets here first,
        and shielded: a client leaving during the save must not cut it short."""
        if self._finished:
            return
        self._finished = True
        with anyio.CancelScope(shield=True):
            try:
                await self.stream.aclose()
            finally:
                await self.save(self.gathered.result(), not self.gathered.done)
