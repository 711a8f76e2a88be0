"""The MCP server, driven by the official MCP client over stdio against a real data folder: what
its tools write is on disk, they reach only the user (and agent) the server was started for, and
bad arguments get errors that name the field without repeating the value."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult, TextContent

from memvault import Vault
from memvault.config import Settings

TOOLS = {
    "add_turns", "search", "context", "add_memory", "supersede_memory", "list_memories",
    "delete_memory", "recent_turns",
}  # fmt: skip
ENV = {**os.environ, "MEMVAULT_EMBEDDER": "hashing"}  # the model, where it counts, below


def _command(data: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "memvault.cli", "--data", str(data), "mcp", *options]


@asynccontextmanager
async def _session(
    data: Path, *options: str, errlog: Path, embedder: str
) -> AsyncIterator[ClientSession]:
    command, *args = _command(data, *options)
    env = ENV | {"MEMVAULT_EMBEDDER": embedder}
    params = StdioServerParameters(command=command, args=args, env=env)
    with errlog.open("w") as log:
        async with (
            stdio_client(params, errlog=log) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


def _with_server(
    tmp_path: Path, *options: str, embedder: str = "hashing"
) -> Callable[[Callable[[ClientSession], Awaitable[None]]], None]:
    """Run a test body against a server for `options` (`--user` and so on) on `tmp_path`."""

    def run(body: Callable[[ClientSession], Awaitable[None]]) -> None:
        async def main() -> None:
            errlog = tmp_path / "err"
            async with _session(
                tmp_path / "data", *options, errlog=errlog, embedder=embedder
            ) as session:
                await body(session)

        asyncio.run(main())

    return run


def _text(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def _answer(result: CallToolResult) -> Any:
    assert not result.isError, _text(result)
    return json.loads(_text(result))


def _vault(tmp_path: Path) -> Vault:
    return Vault(settings=Settings(data=tmp_path / "data", embedder="hashing"))


def test_the_tools_are_listed_with_their_argument_schemas(tmp_path: Path) -> None:
    async def body(session: ClientSession) -> None:
        listed = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(listed) == TOOLS
        assert set(listed["add_turns"].inputSchema["required"]) == {"session_id", "turns"}
        assert all(tool.description for tool in listed.values())

    _with_server(tmp_path, "--user", "alice")(body)


def test_turns_saved_over_mcp_are_on_disk_and_found(tmp_path: Path) -> None:
    async def body(session: ClientSession) -> None:
        turns = [
            {"role": "user", "content": "My beagle is called Biscuit"},
            {"role": "assistant", "content": "What a lovely name for a beagle"},
        ]
        saved = _answer(await session.call_tool("add_turns", {"session_id": "c1", "turns": turns}))
        assert len(saved["saved"]) == 2
        hits = _answer(await session.call_tool("search", {"query": "where is Biscuit?"}))
        assert hits["hits"][0]["text"] == "My beagle is called Biscuit"
        recent = _answer(await session.call_tool("recent_turns", {"session_id": "c1"}))
        assert [t["role"] for t in recent["turns"]] == ["user", "assistant"]

    _with_server(tmp_path, "--user", "alice", embedder="minilm")(body)
    with _vault(tmp_path) as vault:  # the server has exited: the turns are in the store
        assert [t.content for t in vault.session_turns("alice", "c1")] == [
            "My beagle is called Biscuit",
            "What a lovely name for a beagle",
        ]


def test_a_superseded_fact_is_kept_and_the_context_gives_the_current_one(tmp_path: Path) -> None:
    async def body(session: ClientSession) -> None:
        old = _answer(await session.call_tool("add_memory", {"text": "Alice lives in Lisbon"}))
        new = _answer(
            await session.call_tool(
                "supersede_memory", {"memory_id": old["id"], "text": "Alice lives in Porto"}
            )
        )
        listed = _answer(await session.call_tool("list_memories", {}))
        assert [m["id"] for m in listed["memories"]] == [new["id"]]
        context = _answer(await session.call_tool("context", {"query": "where does Alice live?"}))
        assert "Porto" in context["text"] and "Lisbon" not in context["text"]

    _with_server(tmp_path, "--user", "alice")(body)
    with _vault(tmp_path) as vault:
        texts = {m.text for m in vault.list_memories("alice", include_superseded=True)}
        assert texts == {"Alice lives in Lisbon", "Alice lives in Porto"}


def test_bad_arguments_name_the_field_never_the_value_and_write_nothing(tmp_path: Path) -> None:
    secret = "peanut-allergy-7731"

    async def body(session: ClientSession) -> None:
        wrong_type = await session.call_tool("search", {"query": "x", "limit": secret})
        assert wrong_type.isError and "limit" in _text(wrong_type)
        empty = await session.call_tool("search", {"query": ""})
        assert empty.isError and "query" in _text(empty)
        unknown_kind = await session.call_tool("list_memories", {"kind": secret})
        assert unknown_kind.isError and "kind:" in _text(unknown_kind)
        half_bad = [
            {"role": "user", "content": secret},
            {"role": "user", "content": "x" * 2_000_000},  # past the turn size limit
        ]
        rejected = await session.call_tool("add_turns", {"session_id": "c1", "turns": half_bad})
        assert rejected.isError and "content" in _text(rejected)
        missing = await session.call_tool("delete_memory", {"memory_id": "no-such-memory"})
        assert missing.isError and "no such memory" in _text(missing)
        for result in (wrong_type, empty, unknown_kind, rejected, missing):
            assert secret not in _text(result)
        assert _answer(await session.call_tool("recent_turns", {}))["turns"] == []

    _with_server(tmp_path, "--user", "alice")(body)
    assert secret not in (tmp_path / "err").read_text()


def test_the_server_reaches_only_the_user_it_was_started_for(tmp_path: Path) -> None:
    with _vault(tmp_path) as vault:
        vault.add_turn("bob", "b1", "user", "Bob keeps his savings under the mattress")
        vault.add_memory("bob", "Bob's bank PIN hint is his cat's birthday")

    async def body(session: ClientSession) -> None:
        await session.call_tool(
            "add_turns", {"session_id": "a1", "turns": [{"role": "user", "content": "hello"}]}
        )
        for query in ("savings under the mattress", "bank PIN hint"):
            hits = _answer(await session.call_tool("search", {"query": query}))["hits"]
            assert all("Bob" not in hit["text"] for hit in hits)
        assert _answer(await session.call_tool("list_memories", {}))["memories"] == []
        turns = _answer(await session.call_tool("recent_turns", {}))["turns"]
        assert [t["content"] for t in turns] == ["hello"]

    _with_server(tmp_path, "--user", "alice")(body)


def test_an_agent_server_sees_its_own_memories_and_not_another_agents(tmp_path: Path) -> None:
    with _vault(tmp_path) as vault:
        jarvis = vault.register_agent("alice", "jarvis")
        vault.add_memory("alice", "Jarvis drafted the quarterly tax return", agent_id=jarvis.id)

    async def body(session: ClientSession) -> None:
        mine = _answer(await session.call_tool("add_memory", {"text": "Friday booked the dentist"}))
        listed = _answer(await session.call_tool("list_memories", {}))["memories"]
        assert [m["id"] for m in listed] == [mine["id"]]
        hits = _answer(await session.call_tool("search", {"query": "quarterly tax return"}))
        assert all("Jarvis" not in hit["text"] for hit in hits["hits"])
        turns = [{"role": "user", "content": "book it"}, {"role": "assistant", "content": "done"}]
        await session.call_tool("add_turns", {"session_id": "f1", "turns": turns})

    _with_server(tmp_path, "--user", "alice", "--agent", "friday")(body)
    with _vault(tmp_path) as vault:
        friday = {a.name: a.id for a in vault.list_agents("alice")}["friday"]
        owned = vault.list_memories("alice", agent_id=friday)
        assert [m.text for m in owned] == ["Friday booked the dentist"]
        # every turn of its conversation is the agent's, as with an agent key over HTTP
        assert [t.agent_id for t in vault.session_turns("alice", "f1")] == [friday, friday]


def test_an_agent_server_cannot_change_memories_it_does_not_see(tmp_path: Path) -> None:
    """Another agent's memory, or one of the user's own, is out of an agent server's view: given
    its id, delete and supersede answer as for a missing memory and change nothing."""
    with _vault(tmp_path) as vault:
        jarvis = vault.register_agent("alice", "jarvis")
        theirs = vault.add_memory("alice", "Jarvis filed the tax return", agent_id=jarvis.id)
        users = vault.add_memory("alice", "Alice lives in Lisbon")

    async def body(session: ClientSession) -> None:
        for memory_id in (theirs.id, users.id):
            deleted = await session.call_tool("delete_memory", {"memory_id": memory_id})
            assert deleted.isError and "no such memory" in _text(deleted)
            replaced = await session.call_tool(
                "supersede_memory", {"memory_id": memory_id, "text": "Friday says otherwise"}
            )
            assert replaced.isError and "no such memory" in _text(replaced)

    _with_server(tmp_path, "--user", "alice", "--agent", "friday")(body)
    with _vault(tmp_path) as vault:
        kept = vault.list_memories("alice", include_superseded=True)
        assert sorted((m.text, m.superseded_by) for m in kept) == [
            ("Alice lives in Lisbon", None), ("Jarvis filed the tax return", None),
        ]  # fmt: skip


def test_a_bad_user_id_stops_the_server_at_launch_naming_it(tmp_path: Path) -> None:
    done = subprocess.run(
        _command(tmp_path / "data", "--user", "../etc"), env=ENV, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "user_id" in done.stderr and done.stdout == ""
