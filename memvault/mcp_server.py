"""memvault over MCP: one user's memory as tools for an assistant or agent (stdio transport).

An MCP client (a desktop assistant, an IDE agent) starts this server as a subprocess, one per
user: `memvault --data FOLDER mcp --user alice [--agent NAME]`. The user is fixed at launch and
no tool takes a user id, so nothing the model asks for can reach another user's data. With
`--agent`, the server is that agent of the user's (registered on first launch): the memories it
writes are its own, its search and context leave out other agents' memories, and it deletes or
supersedes only its own, as an agent key does on the HTTP API.

The tools are the `Vault` methods of the same names, so what holds for the library holds here:
a turn is on disk when `add_turns` answers, a contradicted fact is superseded, not lost. The
Vault is blocking, so each call runs on a worker thread, off the event loop that speaks the
protocol. Errors name the bad field (`Invalid`) or the missing object (`NotFound`), as the
library's do; anything else is reported by its type only, so no content reaches the client's
logs through an exception's text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import anyio.to_thread
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.types import ContentBlock
from pydantic import BaseModel, Field, ValidationError

from memvault import validate as v
from memvault.errors import MemvaultError, NotFound
from memvault.model import MemoryKind, to_jsonable
from memvault.retrieval.search import Hit
from memvault.vault import Vault

log = logging.getLogger(__name__)
T = TypeVar("T")

INSTRUCTIONS = """Long-term memory of the user you are talking with. Save each conversation \
turn with add_turns. Before answering a question that may depend on the past, call context \
(ready-to-use text for your prompt) or search. Store lasting facts, preferences and decisions \
with add_memory; when one no longer holds, supersede_memory keeps its history."""


class TurnIn(BaseModel):
    """One conversation turn to save."""

    role: Literal["user", "assistant", "system", "tool"]
    content: str
    speaker: str | None = Field(None, description="Who spoke, when several people share a chat")


class Tools:
    """The tools, bound to one vault, one user and, optionally, one agent of that user."""

    def __init__(self, vault: Vault, user_id: str, agent_id: str | None = None) -> None:
        self.vault = vault
        self.user_id = user_id
        self.agent_id = agent_id

    async def add_turns(self, session_id: str, turns: list[TurnIn]) -> dict[str, Any]:
        """Save conversation turns, in order, to a session (created on its first turn)."""
        stamp = {"agent_id": self.agent_id} if self.agent_id else {}  # as an agent key does
        rows = [turn.model_dump(exclude_none=True) | stamp for turn in turns]
        saved = await _run(self.vault.add_turns, self.user_id, session_id, rows)
        return {"saved": [turn.id for turn in saved]}

    async def search(
        self,
        query: str,
        limit: int = 10,
        types: list[Literal["turn", "memory"]] | None = None,
        session_id: str | None = None,
    ) -> dict[str, Any]:
        """Turns and memories relevant to the query, best first."""
        hits = await _run(
            lambda: self.vault.search(
                self.user_id,
                query,
                limit=limit,
                types=types or ("turn", "memory"),
                session_id=session_id,
                seen_by_agent=self.agent_id,
            )
        )
        return {"hits": [_hit(hit) for hit in hits]}

    async def context(
        self, query: str, session_id: str | None = None, token_budget: int = 2000
    ) -> dict[str, Any]:
        """What to know before answering `query`, as text for the prompt, within the budget:
        global context, the user's facts, relevant memories and turns, the session's recent
        turns."""
        built = await _run(
            lambda: self.vault.context(
                self.user_id,
                query,
                session_id=session_id,
                token_budget=token_budget,
                agent_id=self.agent_id,
                asked_by="user",
            )
        )
        return {"text": built.text, "tokens": built.tokens}

    async def add_memory(
        self,
        text: str,
        kind: MemoryKind = MemoryKind.FACT,
        category: str | None = None,
        importance: float | None = None,
        tags: list[str] | None = None,
    ) -> dict[str, Any]:
        """Store a lasting memory about the user: a fact or preference, an event (episodic), a
        how-to (procedural), or a conclusion drawn (reflection)."""
        fields = _given(category=category, importance=importance, tags=tags)
        memory = await _run(
            lambda: self.vault.add_memory(
                self.user_id, text, kind=kind, agent_id=self.agent_id, **fields
            )
        )
        return _memory(memory)

    async def supersede_memory(self, memory_id: str, text: str) -> dict[str, Any]:
        """Replace a memory that no longer holds; the old one is kept as history."""
        await _run(self._visible_memory, memory_id)
        memory = await _run(self.vault.supersede_memory, self.user_id, memory_id, text)
        return _memory(memory)

    async def list_memories(
        self, kind: MemoryKind | None = None, category: str | None = None, limit: int = 50
    ) -> dict[str, Any]:
        """Current memories, newest first, optionally of one kind or category."""
        memories = await _run(
            lambda: self.vault.list_memories(
                self.user_id,
                kinds=[kind] if kind else None,
                category=category,
                agent_id=self.agent_id,
                include_superseded=False,
                limit=limit,
            )
        )
        return {"memories": [_memory(m) for m in memories]}

    async def delete_memory(self, memory_id: str) -> dict[str, Any]:
        """Forget a memory for good (to record that it no longer holds, supersede it)."""
        await _run(self._visible_memory, memory_id)
        await _run(self.vault.delete_memory, self.user_id, memory_id)
        return {"deleted": memory_id}

    async def recent_turns(self, session_id: str | None = None, limit: int = 20) -> dict[str, Any]:
        """The newest turns, oldest first (of one session, or of all)."""
        turns = await _run(
            lambda: self.vault.recent_turns(self.user_id, session_id=session_id, limit=limit)
        )
        return {"turns": [_turn(turn) for turn in turns]}

    def _visible_memory(self, memory_id: str) -> None:
        """An agent server works only with its own agent's memories, as an agent key does on
        the HTTP API: the others answer as missing ones do. (A user's server sees them all, and
        reads nothing here.)"""
        if self.agent_id is None:
            return
        if self.vault.get_memory(self.user_id, memory_id).agent_id != self.agent_id:
            raise NotFound("no such memory")

    def register(self, server: FastMCP) -> None:
        for tool in (
            self.add_turns, self.search, self.context, self.add_memory, self.supersede_memory,
            self.list_memories, self.delete_memory, self.recent_turns,
        ):  # fmt: skip
            server.add_tool(tool)


class MemoryServer(FastMCP):
    """FastMCP whose argument errors name the fields at fault without repeating their values
    (pydantic's text quotes the input, and errors end up in logs)."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any]
    ) -> Sequence[ContentBlock] | dict[str, Any]:
        try:
            return await super().call_tool(name, arguments)
        except ToolError as exc:
            if not isinstance(exc.__cause__, ValidationError):
                raise
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc']))}: {error['msg']}"
                for error in exc.__cause__.errors()
            )
            raise ToolError(f"Error executing tool {name}: {problems}") from None


def build_server(vault: Vault, user_id: str, agent: str | None = None) -> MemoryServer:
    """The MCP server for `user_id` (as its agent `agent`, registered if new)."""
    v.check_id("user_id", user_id)
    agent_id = None if agent is None else vault.register_agent(user_id, agent).id  # by name
    server = MemoryServer("memvault", instructions=INSTRUCTIONS, log_level="WARNING")
    Tools(vault, user_id, agent_id).register(server)
    return server


async def _run(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` on a worker thread, its errors as the client should see them."""
    try:
        return await anyio.to_thread.run_sync(lambda: call(*args))
    except MemvaultError as exc:
        raise ToolError(exc.message) from None
    except Exception as exc:
        log.error("MCP tool failed (%s)", type(exc).__name__)
        raise ToolError(f"internal error ({type(exc).__name__})") from None


def _given(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def _hit(hit: Hit) -> dict[str, Any]:
    fields = ("type", "id", "score", "text", "session_id", "role", "speaker", "created_at")
    return {name: to_jsonable(getattr(hit, name)) for name in fields}


def _memory(memory: Any) -> dict[str, Any]:
    data = memory.to_dict()
    keep = ("id", "text", "kind", "tier", "category", "tags", "importance", "created_at")
    return {name: data.get(name) for name in keep}


def _turn(turn: Any) -> dict[str, Any]:
    data = turn.to_dict()
    keep = ("id", "session_id", "role", "speaker", "content", "created_at")
    return {name: data.get(name) for name in keep}
