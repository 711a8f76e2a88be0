"""What MCP costs on top of the library: the same searches and appends through `memvault mcp`
(the official SDK's client over stdio, one JSON-RPC round trip a call) and through `Vault` in
the benchmark's own process, on one data folder.

Two users with `HISTORY` chat turns each are written and embedded first: the MCP server is
started for one, the library calls go to the other, so that neither side tops its index up with
the other's writes. Then, in alternating blocks of `BLOCK` calls (this machine's speed drifts,
so each way is measured in turns), searches of fresh chat-like queries, and appends of one turn.
The difference between the two ways is the protocol's round trip and the tool layer
(validation, JSON, a worker thread), not the search.

Run: `python -m benchmarks mcp` (about a minute on 2 cores).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from benchmarks.bench_warm import chat_turns, open_vault, sentence
from benchmarks.common import ratio, summary_ms, write_results
from memvault.retrieval.embed import default_embedder
from memvault.vault import Vault

HISTORY = 1_000
BLOCK = 25
BLOCKS = 8  # per way and kind of call
USER = "ann"  # served over MCP
LIBRARY_USER = "bea"  # called in this process


async def _timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def _measure(folder: Path, vault: Vault, rng: random.Random) -> dict[str, list[float]]:
    command = [sys.executable, "-m", "memvault.cli", "--data", str(folder), "mcp", "--user", USER]
    params = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    timed: dict[str, list[float]] = {
        f"{kind}_{way}": [] for kind in ("search", "append") for way in ("mcp", "library")
    }
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        await session.call_tool("search", {"query": sentence(rng)})  # its index, built once
        vault.search(LIBRARY_USER, sentence(rng))

        def mcp_search() -> Awaitable[Any]:
            return session.call_tool("search", {"query": sentence(rng)})

        def mcp_append() -> Awaitable[Any]:
            turn = {"role": "user", "content": sentence(rng)}
            return session.call_tool("add_turns", {"session_id": "today", "turns": [turn]})

        async def library_search() -> None:
            vault.search(LIBRARY_USER, sentence(rng))

        async def library_append() -> None:
            vault.add_turn(LIBRARY_USER, "today", "user", sentence(rng))

        ways = {
            "search_mcp": mcp_search, "search_library": library_search,
            "append_mcp": mcp_append, "append_library": library_append,
        }  # fmt: skip
        for block in range(BLOCKS):
            order = list(ways) if block % 2 == 0 else list(reversed(ways))
            for name in order:
                for _ in range(BLOCK):
                    timed[name].append(await _timed(ways[name]))
    return timed


def main() -> None:
    embedder = default_embedder()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="memvault-bench-mcp-") as scratch:
        folder = Path(scratch)
        with open_vault(folder, embedder, warm=True) as vault:  # as the MCP server runs
            for user_id in (USER, LIBRARY_USER):
                for first in range(0, HISTORY, 100):
                    vault.add_turns(user_id, f"old{first}", chat_turns(rng, 100))
                vault.search(user_id, "warm the index and store every vector")
            timed = asyncio.run(_measure(folder, vault, rng))
    summaries = {name: summary_ms(values) for name, values in timed.items()}
    results: dict[str, Any] = {
        "history_turns": HISTORY,
        "calls_each": BLOCK * BLOCKS,
        "calls": summaries,
        "search_mcp_over_library_p50": ratio(
            summaries["search_mcp"], summaries["search_library"], "p50_ms", 2
        ),
        "append_mcp_over_library_p50": ratio(
            summaries["append_mcp"], summaries["append_library"], "p50_ms", 2
        ),
    }
    write_results("mcp", results)
    print(results)


if __name__ == "__main__":
    main()
