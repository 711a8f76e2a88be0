"""WebSocket `/v1/ws`: live events from the Vault's write path, and turn appends.

Protocol (JSON text frames):

- client first sends `{"type": "auth", "token": KEY}`; a bad or missing token closes with 4401.
  The server answers `{"type": "ready", "scope", "user_id"}`.
- `{"type": "join", "room": "user:ID" | "session:ID", "user_id"?}` subscribes (`user_id` only
  for admin keys). Joining a session room first sends `{"type": "history", "turns": [...]}`.
  Rooms of other users answer an error `not_found`, as if they did not exist.
- `{"type": "leave", "room"}`; `{"type": "ping"}` answers `{"type": "pong"}`.
- `{"type": "append", "session_id", "turns": [...]}` appends turns durably and answers
  `{"type": "appended", "turns": [...]}`; an optional `ref` is echoed in answers and errors
  (one that would not go out as valid JSON, such as NaN, answers an `invalid` error instead).
- events: `{"type": "turn.added" | "memory.added" | ..., "user_id", ids...}` (ids, no content).
  Memory events also carry the memory's `agent_id`; an agent key hears only its own agent's.
- a connection silent for `ws_idle_timeout` seconds is closed with 4408; one whose key is
  revoked (or whose user is deleted, with their keys), or whose JWT reaches its `exp`, is
  closed with 4401.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State

from memvault import validate as v
from memvault.api.appends import AppendBatcher
from memvault.api.auth import Authenticator, Principal
from memvault.api.middleware import KEY_ID
from memvault.api.ratelimit import RateLimiter
from memvault.config import Settings
from memvault.errors import Invalid, MemvaultError, NotFound, Unauthorized
from memvault.events import Event
from memvault.vault import Vault

log = logging.getLogger(__name__)
router = APIRouter()

CLOSE_UNAUTHORIZED = 4401
CLOSE_IDLE = 4408
CLOSE_TOO_SLOW = 4429
QUEUE_LIMIT = 1000  # a client this far behind is dropped rather than buffered without bound

MEMORY_EVENT = "memory."  # memory.added, memory.updated, memory.deleted
Room = tuple[str, str]  # (user id, "user:ID" | "session:ID")


@dataclass(frozen=True, slots=True)
class Closing:
    """The last item of an outbox: the sender closes the socket with this code."""

    code: int
    reason: str


@dataclass(eq=False)
class Connection:
    principal: Principal
    outbox: asyncio.Queue[dict[str, Any] | Closing] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_LIMIT)
    )
    rooms: set[Room] = field(default_factory=set)
    closing: bool = False  # once set, nothing more is sent or handled

    def push(self, message: dict[str, Any]) -> None:
        if self.closing:
            return
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            self.close(CLOSE_TOO_SLOW, "too slow to read events")

    def close(self, code: int, reason: str) -> None:
        """Drop whatever is still queued and have the sender close the socket."""
        self.closing = True
        while not self.outbox.empty():
            self.outbox.get_nowait()
        self.outbox.put_nowait(Closing(code, reason))


class Hub:
    """Routes Vault events to the connections in the matching rooms.

    The EventBus calls back on whatever thread committed the write; the hub hops onto the
    event loop before touching any connection. A connection whose key the event ends (its
    revocation, its user's deletion) is closed, in a room or not.
    """

    def __init__(self, vault: Vault, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.rooms: dict[Room, set[Connection]] = {}
        self.connections: set[Connection] = set()
        self._unsubscribe = vault.events.subscribe(self._on_event)

    def close(self) -> None:
        self._unsubscribe()

    def _on_event(self, event: Event) -> None:
        self.loop.call_soon_threadsafe(self._dispatch, event)

    def _dispatch(self, event: Event) -> None:
        for conn in [c for c in self.connections if c.principal.ended_by(event)]:
            conn.close(CLOSE_UNAUTHORIZED, "key revoked")
            self.drop(conn)
        rooms = [(event.user_id, f"user:{event.user_id}")]
        if "session_id" in event.ids:
            rooms.append((event.user_id, f"session:{event.ids['session_id']}"))
        targets = {conn for room in rooms for conn in self.rooms.get(room, ())}
        message = {"type": event.type, "user_id": event.user_id, **event.ids}
        for conn in targets:
            if hears(conn.principal, event):
                conn.push(message)

    def join(self, conn: Connection, room: Room) -> None:
        self.rooms.setdefault(room, set()).add(conn)
        conn.rooms.add(room)

    def leave(self, conn: Connection, room: Room) -> None:
        members = self.rooms.get(room)
        if members is not None:
            members.discard(conn)
            if not members:
                del self.rooms[room]
        conn.rooms.discard(room)

    def add(self, conn: Connection) -> None:
        self.connections.add(conn)

    def drop(self, conn: Connection) -> None:
        self.connections.discard(conn)
        for room in list(conn.rooms):
            self.leave(conn, room)


def hears(principal: Principal, event: Event) -> bool:
    """Whether this key may hear of the event: the rule of the HTTP routes, applied to ids.

    An agent key sees only its own agent's memories (others answer 404 over HTTP), so it
    hears memory events only when the event names its agent. A memory event that names no
    agent (a memory of the user's own, or sent by an older process) reaches no agent key:
    when in doubt, an id is not leaked. Turns and sessions are the whole user's to every key.
    A memory moved away from an agent (`previous_agent_id`) is news to that agent too: it
    leaves its view.
    """
    if not event.type.startswith(MEMORY_EVENT):
        return True
    owners = [event.ids.get("agent_id")]
    if "previous_agent_id" in event.ids:
        owners.append(event.ids["previous_agent_id"])
    return any(principal.sees_agent(owner) for owner in owners)


@router.websocket("/v1/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    state = websocket.app.state
    settings: Settings = state.settings
    await websocket.accept()
    try:
        principal = await _authenticate(websocket, state.auth, settings.ws_idle_timeout)
    except (Unauthorized, Invalid, TimeoutError, ValueError, RecursionError):
        await websocket.close(CLOSE_UNAUTHORIZED, "unauthorized")
        return
    except WebSocketDisconnect:
        return
    websocket.scope[KEY_ID] = principal.key_id
    session = _Session(websocket, principal, state)
    await session.run(settings)


async def _receive_text(websocket: WebSocket) -> str | None:
    """The next frame's text; None for a binary frame, which this JSON text protocol does not
    read (`receive_text` would fail on it and take the connection down)."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    text = message.get("text")
    return text if isinstance(text, str) else None


async def _authenticate(websocket: WebSocket, auth: Authenticator, timeout: float) -> Principal:
    text = await asyncio.wait_for(_receive_text(websocket), timeout)
    if text is None:
        raise Unauthorized("the first message must be {type: auth, token}")
    message = json.loads(text)  # deep nesting raises RecursionError: a failed authentication
    if not isinstance(message, dict):
        raise Unauthorized("the first message must be {type: auth, token}")
    token = message.get("token")
    if message.get("type") != "auth" or not isinstance(token, str):
        raise Unauthorized("the first message must be {type: auth, token}")
    return await run_in_threadpool(auth.principal, token)


class _Session:
    """One authenticated connection: a reader loop here, a writer task draining the outbox.

    A JWT with an `exp` is closed (4401) by a timer set for that moment; a message read once it
    has passed is not acted on either, should it beat the timer."""

    def __init__(self, websocket: WebSocket, principal: Principal, state: State) -> None:
        self.websocket = websocket
        self.expires_at = principal.expires_at
        self.vault: Vault = state.vault
        self.hub: Hub = state.hub
        self.limiter: RateLimiter = state.rate_limiter
        self.appends: AppendBatcher = state.appends
        self.conn = Connection(principal)

    async def run(self, settings: Settings) -> None:
        principal = self.conn.principal
        self.conn.push({"type": "ready", "scope": principal.scope.value,
                        "user_id": principal.user_id, "agent_id": principal.agent_id})  # fmt: skip
        self.hub.add(self.conn)
        writer = asyncio.create_task(self._write())
        expiry = None
        if self.expires_at is not None:
            delay = max(0.0, self.expires_at - time.time())
            expiry = asyncio.get_running_loop().call_later(delay, self._expire)
        try:
            while not writer.done():
                try:
                    text = await asyncio.wait_for(
                        _receive_text(self.websocket), settings.ws_idle_timeout
                    )
                except TimeoutError:
                    await self.websocket.close(CLOSE_IDLE, "idle timeout")
                    return
                await self._handle(text, settings)
        except WebSocketDisconnect:
            return
        finally:
            if expiry is not None:
                expiry.cancel()
            self.hub.drop(self.conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _write(self) -> None:
        while True:
            message = await self.conn.outbox.get()
            if isinstance(message, Closing):
                await self.websocket.close(message.code, message.reason)
                return
            await self.websocket.send_text(json.dumps(message, ensure_ascii=False))

    def _expire(self) -> None:
        """The token's `exp` has passed: as for a revoked key, nothing more is heard or done."""
        if not self.conn.closing:
            self.conn.close(CLOSE_UNAUTHORIZED, "token expired")
        self.hub.drop(self.conn)

    async def _handle(self, text: str | None, settings: Settings) -> None:
        if self.expires_at is not None and time.time() >= self.expires_at:
            self._expire()
        if self.conn.closing:  # its key was revoked or its token expired: the close is on its way
            return
        ref = None
        try:
            message = _parse(text)
            if not isinstance(message, dict):
                raise Invalid("message", "must be a JSON object")
            ref = _ref(message, settings.max_json_bytes)
            reply = await self._answer(message, settings)
        except MemvaultError as exc:
            reply = _error(exc.code, exc.message, exc.details)
        except json.JSONDecodeError:
            reply = _error("invalid", "not JSON", {})
        except Exception as exc:  # as over HTTP: the class is logged, nothing of the message
            log.error("unhandled %s in a WebSocket message", type(exc).__name__)
            reply = _error("internal", "internal server error", {})
        for item in reply if isinstance(reply, list) else [reply]:
            self.conn.push(item if ref is None else {**item, "ref": ref})

    async def _answer(
        self, message: dict[str, Any], settings: Settings
    ) -> dict[str, Any] | list[dict[str, Any]]:
        kind = message.get("type")
        if kind == "ping":
            return {"type": "pong"}
        if kind in ("join", "leave"):
            room = self._room(message)
            if kind == "leave":
                self.hub.leave(self.conn, room)
                return {"type": "left", "room": room[1]}
            return await self._join(room, settings.ws_history_turns)
        if kind == "append":
            return await self._append(message)
        raise Invalid("type", "unknown message type")

    def _room(self, message: dict[str, Any]) -> Room:
        principal = self.conn.principal
        name = message.get("room")
        if not isinstance(name, str) or not name.startswith(("user:", "session:")):
            raise Invalid("room", "must be user:ID or session:ID")
        kind, _, ident = name.partition(":")
        user_id = message.get("user_id") or (ident if kind == "user" else principal.user_id)
        if not isinstance(user_id, str) or not principal.may_access(user_id):
            raise NotFound("no such room")
        if kind == "user" and ident != user_id:
            raise NotFound("no such room")
        return (user_id, name)

    async def _join(self, room: Room, history: int) -> list[dict[str, Any]]:
        user_id, name = room
        replies: list[dict[str, Any]] = []
        if name.startswith("session:") and history:
            session_id = name.partition(":")[2]
            turns = await run_in_threadpool(
                self.vault.recent_turns, user_id, session_id=session_id, limit=history
            )
            replies.append({"type": "history", "room": name,
                            "turns": [t.to_dict() for t in turns]})  # fmt: skip
        self.hub.join(self.conn, room)
        return [{"type": "joined", "room": name}, *replies]

    async def _append(self, message: dict[str, Any]) -> dict[str, Any]:
        principal = self.conn.principal
        self.limiter.check(principal.key_id)
        user_id = message.get("user_id") or principal.user_id
        if not isinstance(user_id, str) or not principal.may_access(user_id):
            raise NotFound("no such user")
        session_id, turns = message.get("session_id"), message.get("turns")
        if not isinstance(session_id, str):
            raise Invalid("session_id", "must be a string")
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise Invalid("turns", "must be a list of turn objects")
        fields = [principal.stamp_agent(t) for t in turns]
        stored = await self.appends.add_turns(user_id, session_id, fields)
        return {"type": "appended", "turns": [t.to_dict() for t in stored]}


def _parse(text: str | None) -> Any:
    if text is None:
        raise Invalid("message", "must be a text frame of JSON")
    try:
        return json.loads(text)
    except RecursionError:
        raise Invalid("message", "is nested too deeply") from None


def _ref(message: dict[str, Any], max_bytes: int) -> Any:
    """The message's `ref`, to echo back: only one that goes out as the JSON it came in as.
    Python's parser takes `NaN`, `Infinity` and `1e999`, which would go out as `NaN` and
    `Infinity` (not JSON), and a lone surrogate escape, which is no UTF-8 text: `check_json`
    refuses both, as it does in every JSON field a caller sends. (A `ref` nested too deeply
    to serialise never gets here: `_parse` refuses it first.)"""
    return v.check_json("ref", message.get("ref"), max_bytes=max_bytes)


def _error(code: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": message, "details": details}}
